# Snakepit 0.3 pool running snakepit-bridge over stdin/stdout (GenericPythonV2 /
# GenericPythonMsgpack style: 4-byte length-prefixed JSON or MessagePack frames).
# Copy into config/config.exs (or import_config it) and adjust `home`.
import Config

config :snakepit,
  pooling_enabled: true,
  adapter_module: SnakepitBridgeAdapter,
  pool_config: %{pool_size: 4},
  # :auto negotiates (the worker picks MessagePack when offered); :json or :msgpack
  # fix the protocol, and the adapter passes the same --protocol to the worker.
  wire_protocol: :auto,
  snakepit_bridge: [
    home: "/opt/snakepit-bridge",
    mode: :stdio,
    # adapter: "my_app_handlers",
    # stdout carries only frames; logs go to stderr either way.
    extra_args: ["--log-level", "warning"]
  ]
