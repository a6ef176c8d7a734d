"""Hardening regressions (issue 12): races, limits, timeouts, Host handling, file modes,
log redaction, request ids, metrics, readiness, shutdown. Each test failed before its fix."""

from __future__ import annotations

import concurrent.futures
import os
import socket
import stat
import time

import pytest
import requests

from conftest import PROJECT, Server, create_token, unique_bucket_name

T = 30


def new_bucket(server, **fields):
    name = unique_bucket_name()
    r = requests.post(f"{server.url}/storage/v1/b?project={PROJECT}", json={"name": name, **fields}, timeout=T)
    assert r.status_code == 200, r.text
    return name


def put_object(server, bucket, name, data=b"x"):
    r = requests.post(
        f"{server.url}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}", data=data, timeout=T
    )
    assert r.status_code == 200, r.text
    return r.json()


# ---- 3: unconditional metadata updates never lose a race ---------------------------------


def test_concurrent_unconditional_patches_all_succeed(server):
    bucket = new_bucket(server)
    put_object(server, bucket, "o")
    url = f"{server.url}/storage/v1/b/{bucket}/o/o"

    def patch(i):
        with requests.Session() as s:
            return [s.patch(url, json={"metadata": {f"k{i}": str(j)}}, timeout=T).status_code for j in range(30)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = [c for cs in pool.map(patch, range(8)) for c in cs]
    assert codes.count(200) == 240, {c: codes.count(c) for c in set(codes)}
    meta = requests.get(url, timeout=T).json()
    assert meta["metageneration"] == "241"
    assert meta["metadata"] == {f"k{i}": "29" for i in range(8)}
    # A precondition the caller did set still fails when it no longer holds.
    r = requests.patch(url, params={"ifMetagenerationMatch": "1"}, json={"metadata": {"x": "y"}}, timeout=T)
    assert r.status_code == 412


def test_concurrent_unconditional_bucket_patches_all_succeed(server):
    bucket = new_bucket(server)
    url = f"{server.url}/storage/v1/b/{bucket}"

    def patch(i):
        with requests.Session() as s:
            return [s.patch(url, json={"labels": {f"k{i}": str(j)}}, timeout=T).status_code for j in range(15)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = [c for cs in pool.map(patch, range(8)) for c in cs]
    assert codes.count(200) == 120, {c: codes.count(c) for c in set(codes)}
    assert requests.get(url, timeout=T).json()["metageneration"] == "121"
