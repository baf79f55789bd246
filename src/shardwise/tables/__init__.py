"""Coordinator and worker-metrics item tables: the ``ItemTable`` port, the table layouts, and the item rules every
backend applies."""
