#!/bin/sh
# The entrypoint of vllm-openai-nonroot: `vllm serve ARGS` as user vllm (uid 2000, gid 0), or as whatever uid a
# restricted pod assigns (OpenShift: an arbitrary uid in group 0, named in no /etc/passwd).
set -eu
# Such a uid has no home: HOME is / or unset, and every cache under $HOME/.cache (Hugging Face, vLLM, Triton,
# FlashInfer, torch's Inductor) fails to write. /home/vllm is group 0's; outside group 0, a fresh folder.
if [ ! -w "${HOME:-/}" ]; then
    HOME=/home/vllm
    [ -w "$HOME" ] || HOME="$(mktemp -d /tmp/vllm-home.XXXXXX)"
    export HOME
fi
# getpass.getuser() (torch's and Triton's cache paths) falls back to the passwd database when these are unset,
# which raises for an unnamed uid.
export USER="${USER:-vllm}"
export LOGNAME="${LOGNAME:-$USER}"
exec vllm serve "$@"
