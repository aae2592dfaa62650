"""``lexlens serve`` as a user runs it: a real process on a free loopback port, the address
announced, the API answering, the API key from the environment, Ctrl-C stopping it; and the
refusal to bind a non-loopback address without a key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# the CLI in a child process, with the test model spec ``test:fake`` registered
BOOT = (
    f"import sys; sys.path.insert(0, {str(HERE)!r}); import server_fakes; "
    "server_fakes.register_test_backend(); from lexlens.cli import main; "
    "sys.exit(main(sys.argv[1:]))"
)


def _start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", BOOT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.timeout(90)
def test_serve_announces_answers_and_stops(built):
    import requests

    proc = _start(
        [
            "serve",
            str(built[0]),
            "--name",
            "pics",
            "--port",
            "0",
            "--json",
            "--log-level",
            "warning",
        ]
    )
    try:
        first = json.loads(proc.stdout.readline())
        url = first["url"]
        assert url.startswith("http://127.0.0.1:") and first["indexes"] == ["pics"]
        assert requests.get(f"{url}/health", timeout=10).json() == {
            "status": "ok",
            "indexes": ["pics"],
        }
        hits = requests.post(f"{url}/search", json={"text": "red", "k": 3}, timeout=10).json()[
            "hits"
        ]
        assert [h["fields"]["color"] for h in hits] == ["red"] * 3
        # no key configured on loopback: writes are open (a no-op remove answers 200)
        r = requests.delete(f"{url}/items", json={"ids": [999999]}, timeout=10)
        assert r.status_code == 200 and r.json()["removed"] == 0
    finally:
        code = _stop(proc)
    assert code in (0, 130), proc.stderr.read()


@pytest.mark.timeout(90)
def test_serve_key_from_environment_and_plain_announcement(built):
    import requests

    proc = _start(
        ["serve", str(built[0]), "--port", "0", "--log-level", "warning"],
        env={"LEXLENS_API_KEY": "from-env"},
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("Serving on http://127.0.0.1:") and "(Ctrl-C to stop)" in line
        url = line.split()[2]
        body = {"ids": [999999]}
        assert requests.delete(f"{url}/items", json=body, timeout=10).status_code == 401
        ok = requests.delete(
            f"{url}/items", json=body, headers={"X-API-Key": "from-env"}, timeout=10
        )
        assert ok.status_code == 200
        assert requests.get(f"{url}/indices-list", timeout=10).json() == ["idx"]  # folder name
    finally:
        _stop(proc)


def test_serve_refuses_public_address_without_key(built, capsys):
    from lexlens.cli import main

    env_key = os.environ.pop("LEXLENS_API_KEY", None)
    try:
        assert main(["serve", str(built[0]), "--host", "0.0.0.0"]) == 2
    finally:
        if env_key is not None:
            os.environ["LEXLENS_API_KEY"] = env_key
    err = capsys.readouterr().err
    assert err.startswith("lexlens: error: binding 0.0.0.0") and "--api-key" in err


def test_serve_argument_errors(built, capsys):
    from lexlens.cli import main

    assert main(["serve", str(built[0]), str(built[0])]) == 2  # two indexes named "idx"
    assert "--name" in capsys.readouterr().err
    assert main(["serve", str(built[0]), "--name", "a", "--name", "b"]) == 2
    assert "one --name per index" in capsys.readouterr().err
    assert main(["serve", str(built[0]), "--max-upload-mb", "0"]) == 2
    assert main(["serve", "/no/such/index"]) != 0
    assert capsys.readouterr().err.startswith("lexlens: error:")


@pytest.mark.timeout(120)
def test_demo_ends_serving_the_demo_index(tmp_path):
    import requests

    args = ["demo", "--out", str(tmp_path / "demo"), "--n", "12", "--model", "test:fake"]
    proc = _start([*args, "--port", "0"])
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Serving on "):
                break
        assert lines and lines[-1].startswith("Serving on http://127.0.0.1:"), "".join(lines)
        assert lines[-1].rstrip().endswith("(Ctrl-C to stop)")
        url = lines[-1].split()[2]
        assert requests.get(f"{url}/health", timeout=10).json()["indexes"] == ["scenes"]
        assert requests.get(f"{url}/indexes/scenes", timeout=10).json()["count"] == 12
        page = requests.get(f"{url}/", timeout=10)
        assert page.status_code == 200 and "<title>lexlens search</title>" in page.text
    finally:
        _stop(proc)
    # --no-serve returns after the searches
    from subprocess import run

    done = run(
        [sys.executable, "-c", BOOT, *args, "--no-serve"],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0 and "Serving on" not in done.stdout
