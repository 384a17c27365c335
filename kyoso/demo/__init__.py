"""`kyoso demo`: the whole system in one process, with nothing else installed."""
