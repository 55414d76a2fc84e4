#!/usr/bin/env bash
# Compile priv/elixir/snakepit_bridge_adapter.ex with --warnings-as-errors, as an
# application built that way would, against stubs of the Snakepit 0.3 modules it
# uses (Snakepit itself is not needed). Manual check, not run by `make test`:
# needs `elixirc` (e.g. apt-get install elixir).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/stubs.ex" <<'STUBS'
defmodule Snakepit.Adapter do
  @callback executable_path() :: String.t()
  @callback script_path() :: String.t()
  @callback script_args() :: [String.t()]
  @callback supported_commands() :: [String.t()]
  @callback validate_command(String.t(), map()) :: :ok | {:error, term()}
  @callback process_response(String.t(), term()) :: {:ok, term()} | {:error, term()}
  @callback prepare_args(String.t(), map()) :: map()
  @callback command_timeout(String.t(), map()) :: pos_integer()
  @optional_callbacks [process_response: 2, prepare_args: 2, command_timeout: 2]
end

defmodule Snakepit.Adapters.GRPCPython do
  def uses_grpc?, do: true
  def get_port, do: 50051
  def init_grpc_connection(_port), do: {:ok, %{}}
  def grpc_execute(_c, _cmd, _args, _t), do: {:ok, %{}}
  def grpc_execute_stream(_c, _cmd, _args, _cb, _t), do: :ok
end
STUBS
elixirc --warnings-as-errors -o "$tmp" "$tmp/stubs.ex" "$root/priv/elixir/snakepit_bridge_adapter.ex"
echo "priv/elixir/snakepit_bridge_adapter.ex compiles without warnings"
