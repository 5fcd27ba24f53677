#!/usr/bin/python3
"""STAND-IN for Ollama -- NOT Ollama.

Built by the llm_ollama_standin molecule scenario into a stand-in release archive
(bin/ollama + lib/ollama/) so that the llm role's install mechanics can be tested where the real
Ollama cannot be downloaded: archive checksum, user, systemd unit and environment, the pull and
its digest comparison, and `ollama create` from a Modelfile. It serves only the API bits the role
and the apps use, with canned answers. Passing this scenario says nothing about Ollama itself.
"""

import hashlib
import json
import os
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STANDIN_VERSION = "0.0.0-standin"


def _host_port():
    value = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434")
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


def _state_path():
    return os.path.join(os.environ.get("OLLAMA_MODELS", "/tmp"), "standin-state.json")


def _load():
    try:
        with open(_state_path()) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {"models": {}}


def _save(state):
    tmp = _state_path() + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(state, handle)
    os.replace(tmp, _state_path())


def _tag(name):
    return name if ":" in name else name + ":latest"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _json(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self):
        length = int(self.headers.get("Content-Length", "0"))
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self):
        if self.path == "/":
            body = b"Ollama is running (stand-in)"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/api/version":
            self._json(200, {"version": STANDIN_VERSION})
        elif self.path == "/api/tags":
            models = _load()["models"]
            self._json(200, {"models": [{"name": n, "model": n, **m} for n, m in sorted(models.items())]})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self):
        body = self._body()
        state = _load()
        name = _tag(body.get("model") or body.get("name") or "")
        if self.path == "/api/pull":
            digest = hashlib.sha256(("registry:" + name).encode()).hexdigest()
            state["models"][name] = {"digest": digest, "parameters": {}, "from": "registry"}
            _save(state)
            self._json(200, {"status": "success"})
        elif self.path == "/api/create":
            modelfile = body.get("modelfile", "")
            params = {}
            base = ""
            for line in modelfile.splitlines():
                words = line.split()
                if len(words) >= 2 and words[0].upper() == "FROM":
                    base = words[1]
                elif len(words) >= 3 and words[0].upper() == "PARAMETER":
                    params[words[1]] = words[2]
            digest = hashlib.sha256(modelfile.encode()).hexdigest()
            state["models"][name] = {"digest": digest, "parameters": params, "from": base}
            _save(state)
            self._json(200, {"status": "success"})
        elif self.path == "/api/show":
            model = state["models"].get(name)
            self._json(200, model) if model else self._json(404, {"error": "model not found"})
        elif self.path == "/api/generate":
            if name not in state["models"]:
                self._json(404, {"error": "model not found"})
            else:
                self._json(200, {"model": name, "response": "stand-in answer", "done": True,
                                 "eval_count": 2, "eval_duration": 1000000})
        else:
            self._json(404, {"error": "not found"})


def main(argv):
    if argv[:1] == ["serve"]:
        ThreadingHTTPServer(_host_port(), Handler).serve_forever()
        return 0
    if argv[:1] == ["create"] and len(argv) == 4 and argv[2] == "-f":
        with open(argv[3]) as handle:
            modelfile = handle.read()
        host, port = _host_port()
        request = urllib.request.Request(
            f"http://{host}:{port}/api/create",
            data=json.dumps({"model": argv[1], "modelfile": modelfile}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            print(response.read().decode())
        return 0
    if argv[:1] in (["--version"], ["-v"]):
        print("ollama version is " + STANDIN_VERSION)
        return 0
    print("stand-in ollama: usage: ollama serve | ollama create NAME -f MODELFILE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
