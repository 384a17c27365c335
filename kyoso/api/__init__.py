"""The capacity service (``kyoso api``)."""
