"""`perpex serve`: a local exchange speaking Binance USDⓈ-M futures' REST and WebSocket API.

`create_app(config, driver)` is the FastAPI application; `ServerConfig` its settings; a
`MarketDriver` (built by `perpex.live` from a scenario) keeps the market alive.
"""

from perpex.server.app import create_app
from perpex.server.config import Limits, ServerConfig
from perpex.server.driver import MarketDriver

__all__ = ["Limits", "MarketDriver", "ServerConfig", "create_app"]
