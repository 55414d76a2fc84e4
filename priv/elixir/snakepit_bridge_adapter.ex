defmodule SnakepitBridgeAdapter do
  @moduledoc """
  A `Snakepit.Adapter` (Snakepit 0.3) that runs the snakepit-bridge Python worker,
  in gRPC mode or in stdin/stdout mode, from a checkout of this project.

  Copy this file into your application (e.g. `lib/my_app/snakepit_bridge_adapter.ex`,
  renaming the module if you like) and configure it; see `priv/config/grpc.exs`
  and `priv/config/stdio.exs`:

      config :snakepit,
        adapter_module: SnakepitBridgeAdapter,
        snakepit_bridge: [
          home: "/opt/snakepit-bridge",   # the checkout: holds .venv/ and priv/python/
          mode: :grpc,                    # or :stdio
          adapter: "my_app_handlers",     # optional: --adapter MODULE (your @command handlers)
          extra_args: []                  # optional: more bridge flags, e.g. ["--log-format", "json"]
        ]

  What each mode launches (Snakepit sets the working directory to the script's folder):

    * `:grpc`  -> `<python> <home>/priv/python/grpc_bridge.py [--adapter M] [extra] --port N`
      (Snakepit's GRPCWorker appends `--port N`, reads the `GRPC_SERVER_READY_ON_PORT=` line,
      and connects to the port that line names);
    * `:stdio` -> `<python> <home>/priv/python/generic_bridge_v2.py --mode pool-worker
      [--protocol json|msgpack] [--adapter M] [extra]` (framed JSON or MessagePack on
      stdin/stdout; `--protocol` follows `config :snakepit, wire_protocol:`, and is left
      out for `:auto` so the worker answers Snakepit's negotiation frame).

  The gRPC plumbing (port choice, connection, execute, streaming) is Snakepit's own
  `Snakepit.Adapters.GRPCPython`; this module only says what to start.
  """

  @behaviour Snakepit.Adapter

  alias Snakepit.Adapters.GRPCPython

  @basic_commands ~w(ping echo compute info store retrieve delete session_info end_session list_sessions
                     echo_payload describe)
  @streaming_commands ~w(ping_stream batch_inference process_large_dataset tail_and_analyze)

  # -- configuration ----------------------------------------------------------------

  defp config, do: Application.get_env(:snakepit, :snakepit_bridge, [])

  defp home do
    case Keyword.get(config(), :home) || System.get_env("SNAKEPIT_BRIDGE_HOME") do
      nil ->
        raise ArgumentError,
              "set config :snakepit, snakepit_bridge: [home: \"/path/to/snakepit-bridge\"] " <>
                "or SNAKEPIT_BRIDGE_HOME"

      home ->
        home
    end
  end

  @doc "`:grpc` (default) or `:stdio`."
  def mode, do: Keyword.get(config(), :mode, :grpc)

  # -- Snakepit.Adapter callbacks ------------------------------------------------------

  @impl true
  def executable_path do
    venv_python = Path.join([home(), ".venv", "bin", "python"])

    cond do
      python = Keyword.get(config(), :python) -> python
      File.exists?(venv_python) -> venv_python
      true -> System.find_executable("python3") || System.find_executable("python")
    end
  end

  @impl true
  def script_path do
    case mode() do
      :grpc -> Path.join([home(), "priv", "python", "grpc_bridge.py"])
      :stdio -> Path.join([home(), "priv", "python", "generic_bridge_v2.py"])
    end
  end

  @impl true
  def script_args do
    handlers =
      case Keyword.get(config(), :adapter) do
        nil -> []
        module -> ["--adapter", module]
      end

    extra = Keyword.get(config(), :extra_args, [])

    case mode() do
      # Never put --port here: GRPCWorker only appends its own port when no arg mentions it.
      :grpc -> handlers ++ extra
      :stdio -> ["--mode", "pool-worker"] ++ protocol_args() ++ handlers ++ extra
    end
  end

  defp protocol_args do
    case Application.get_env(:snakepit, :wire_protocol, :auto) do
      :json -> ["--protocol", "json"]
      :msgpack -> ["--protocol", "msgpack"]
      _auto -> []
    end
  end

  @impl true
  def supported_commands do
    # Streaming commands work in stdio mode too: without the opt-in "stream": true
    # they answer once with every chunk collected (see docs/protocol.md).
    @basic_commands ++ @streaming_commands ++ Keyword.get(config(), :commands, [])
  end

  @impl true
  def validate_command(command, _args) do
    # Unknown names are still sent: the worker answers them with a clear
    # "unknown command" error, and handlers loaded with --adapter are not listed here
    # unless you name them in `commands:`.
    if Keyword.get(config(), :strict_commands, false) and command not in supported_commands() do
      {:error, "unsupported command: #{command}"}
    else
      :ok
    end
  end

  @impl true
  def prepare_args(_command, args), do: args

  @impl true
  def process_response(_command, response), do: {:ok, response}

  # Long-running built-ins get longer call timeouts, as Snakepit's GRPCPython gives them.
  @impl true
  def command_timeout("batch_inference", _args), do: 300_000
  def command_timeout("process_large_dataset", _args), do: 600_000
  def command_timeout(_command, _args), do: 30_000

  # -- gRPC mode: Snakepit's GRPCWorker calls these; GRPCPython does the work -----------

  @doc "True in gRPC mode (when Snakepit's gRPC dependencies are loaded): the pool then uses GRPCWorker."
  def uses_grpc?, do: mode() == :grpc and GRPCPython.uses_grpc?()

  def get_port, do: GRPCPython.get_port()

  def init_grpc_connection(port), do: GRPCPython.init_grpc_connection(port)

  def grpc_execute(connection, command, args, timeout \\ 30_000),
    do: GRPCPython.grpc_execute(connection, command, args, timeout)

  def grpc_execute_stream(connection, command, args, callback_fn, timeout \\ 300_000),
    do: GRPCPython.grpc_execute_stream(connection, command, args, callback_fn, timeout)
end
