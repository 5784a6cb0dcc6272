"""Operating the cache: the admin API and dashboard (api.py), who may use them (auth.py),
and the per-minute time series behind the dashboard (timeseries.py)."""

from .api import ADMIN, add_routes, admin_ctx

__all__ = ["ADMIN", "add_routes", "admin_ctx"]
