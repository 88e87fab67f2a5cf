#!/usr/bin/env python3
"""Checks the tests' Hugging Face Hub (test/servers/hub.ts) against huggingface_hub itself.

The HfStorage tests run against a Hub server of the project's own, on loopback. This script
starts that server (node --import tsx test/servers/hub-main.ts) and has Python's official client
download from it through HF_ENDPOINT, so that the server is known to speak the Hub's API as the
client uses it: repo_info and the paginated tree, resolve with its headers, the redirect of LFS
files to a CDN (which refuses an Authorization header), and the Hub's errors (X-Error-Code).

Run from the project root, where huggingface_hub is installed (pip install huggingface_hub):

    python3 scripts/check-hub-server.py

It prints one line per check and exits with 0 when all passed. No request leaves 127.0.0.1.
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
server = subprocess.Popen(
    ["node", "--import", "tsx", os.path.join(root, "test", "servers", "hub-main.ts")],
    cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
)
info = json.loads(server.stdout.readline())

# Before huggingface_hub is imported: it reads its settings once.
os.environ["HF_ENDPOINT"] = info["endpoint"]
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HF_HUB_OFFLINE", None)
cache = tempfile.mkdtemp(prefix="hub-check-")
os.environ["HF_HOME"] = cache

import huggingface_hub  # noqa: E402
from huggingface_hub import HfApi, hf_hub_download, snapshot_download  # noqa: E402
from huggingface_hub import errors  # noqa: E402

failures = 0


def check(name, test):
    global failures
    try:
        test()
        print(f"ok    {name}")
    except Exception as error:  # noqa: BLE001
        failures += 1
        print(f"FAIL  {name}: {type(error).__name__}: {error}")


def sha256_of(file):
    with open(file, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def raises(kind, call):
    try:
        call()
    except kind:
        return
    raise AssertionError(f"expected {kind.__name__}")


def snapshot():
    folder = snapshot_download("acme/iris", cache_dir=os.path.join(cache, "a"))
    for name, digest in info["sha256"].items():
        assert sha256_of(os.path.join(folder, name)) == digest, name
    assert os.path.basename(folder) == info["commits"]["iris"], folder


def single_file_at_tag():
    file = hf_hub_download("acme/iris", "model.onnx", revision="v1", cache_dir=os.path.join(cache, "b"))
    assert sha256_of(file) == info["sha256"]["model.onnx"]


def patterns():
    folder = snapshot_download("acme/iris", allow_patterns=["*.json", "onnx/*"], cache_dir=os.path.join(cache, "c"))
    found = sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)
    assert found == ["config.json", "onnx/model_quantized.onnx"], found


def metadata():
    api = HfApi()
    model = api.model_info("acme/iris", files_metadata=True)
    assert model.sha == info["commits"]["iris"]
    lfs = {s.rfilename: s.lfs.sha256 for s in model.siblings if s.lfs is not None}
    assert lfs["model.onnx"] == info["sha256"]["model.onnx"], lfs
    tree = [f.path for f in api.list_repo_tree("acme/iris", recursive=True)]
    assert sorted(tree) == sorted(info["sha256"].keys()), tree
    meta = huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url("acme/iris", "model.onnx"))
    assert meta.commit_hash == info["commits"]["iris"] and meta.etag == info["sha256"]["model.onnx"], meta


def private():
    raises(errors.RepositoryNotFoundError, lambda: snapshot_download("acme/secret", cache_dir=os.path.join(cache, "d")))
    folder = snapshot_download("acme/secret", token="hf_check_token", cache_dir=os.path.join(cache, "e"))
    assert os.path.exists(os.path.join(folder, "weights.bin"))


def gated():
    raises(errors.GatedRepoError, lambda: hf_hub_download("acme/gated", "weights.bin", cache_dir=os.path.join(cache, "f")))


def missing():
    raises(errors.RevisionNotFoundError, lambda: hf_hub_download("acme/iris", "model.onnx", revision="v404", cache_dir=os.path.join(cache, "g")))
    raises(errors.EntryNotFoundError, lambda: hf_hub_download("acme/iris", "absent.bin", cache_dir=os.path.join(cache, "h")))


def dataset():
    folder = snapshot_download("acme/flowers", repo_type="dataset", cache_dir=os.path.join(cache, "i"))
    with open(os.path.join(folder, "train", "a.csv")) as f:
        assert f.read() == "a,b\n1,2\n"


try:
    print(f"huggingface_hub {huggingface_hub.__version__} against {info['endpoint']} (CDN {info['cdn']})")
    check("snapshot_download: every file, under the commit's snapshot", snapshot)
    check("hf_hub_download at a tag (LFS through the CDN)", single_file_at_tag)
    check("allow_patterns", patterns)
    check("model_info(files_metadata), list_repo_tree (paginated), get_hf_file_metadata", metadata)
    check("a private repository: RepositoryNotFoundError without a token, files with one", private)
    check("a gated repository: GatedRepoError", gated)
    check("RevisionNotFoundError, EntryNotFoundError", missing)
    check("a dataset", dataset)
finally:
    server.stdin.close()
    server.wait(timeout=10)

print("all checks passed" if failures == 0 else f"{failures} check(s) failed")
sys.exit(1 if failures else 0)
