"""Alerts the plant manager reads: rules per factory over the Kyoso API (a machine down, a
gateway offline, capacity below a threshold, orders at risk, a BCP partner's machine down),
delivered by e-mail, LINE and any other apprise channel, in the recipient's language, with
de-duplication, reminders, recoveries and quiet hours (docs/alerts.md)."""
