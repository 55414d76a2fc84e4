# Snakepit 0.3 pool running snakepit-bridge over gRPC (one Python process per worker).
# Copy into config/config.exs (or import_config it) and adjust `home`.
import Config

config :snakepit,
  pooling_enabled: true,
  adapter_module: SnakepitBridgeAdapter,
  pool_config: %{pool_size: 4},
  # Each worker draws a port from base_port..base_port+port_range-1. Two workers
  # drawing the same port is harmless: the bridge binds another free port and
  # reports it in its ready line, which is the port Snakepit connects to.
  grpc_config: %{base_port: 50051, port_range: 100},
  snakepit_bridge: [
    # The snakepit-bridge checkout (after `make install`): .venv/ and priv/python/ live here.
    home: "/opt/snakepit-bridge",
    mode: :grpc,
    # Optional: a Python module of @command handlers, importable from `home`
    # (or installed in its venv); the built-ins are always there.
    # adapter: "my_app_handlers",
    # Optional: more bridge flags (see docs/operations.md), e.g. JSON logs.
    extra_args: ["--log-format", "json"]
  ]
