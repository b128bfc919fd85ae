"""Offline work over the store and datasets, never on a request's path: spend and task reports
(``reports``), policy backtests (``backtest``), learning from outcomes (``learning``), the
local tier's account, route explanations, and calibrating self-hosted backends (``calibrate``
drives the server, ``calibration_stats`` turns what it measured into a price). With
``gateway.store``, the only layer that may import SQLAlchemy."""
