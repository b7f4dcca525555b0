#!/usr/bin/env python3
"""edgetune's on-device runner: evaluate a bundled GGUF with the bundled llama-server. Python 3 stdlib only.

Shipped in every bundle as runner/edgetune_runner.py; it never imports edgetune. It starts `bin/llama-server`
on 127.0.0.1 (a free port, one slot, the given threads and context), waits for /health, sends every suite item
to /completion as token ids with greedy decoding (temperature 0, top_k 1, no prompt cache), stops the server,
and writes into --job-dir:

    results.jsonl   one line per item, in suite order (written last, atomically: its presence = job done)
    summary.json    totals, peak RSS, server command, device facts (CPU, RAM, OS, temperature, throttling)
    progress.jsonl  append-only log of finished items (what a resumed run skips)
    job.json        what the job is (model, suite hash, threads, context); a resume must match it
    server.log      llama-server's own output
    bench.json      the bundled llama-bench's measurement of the model (pp<N> and tg<N> tok/s), when bin/llama-bench
                    is there and --bench-prompt/--bench-gen are not both 0; copied into summary.json's "bench"
    .lock           held (flock) while a runner works on this job dir

Usage, from the bundle folder:
    python3 runner/edgetune_runner.py --job-dir jobs/q4 --model models/tiny-Q4_0.gguf
    python3 runner/edgetune_runner.py --job-dir jobs/q4r --model models/tiny-Q4_0.gguf \
        --lora adapters/tiny-Q4_0-recovery-f16.gguf
    python3 runner/edgetune_runner.py --job-dir jobs/q4 --suite suite/heldout.jsonl --threads 4 --ctx-size 2048

Suite lines: {"id": str|int, "prompt_ids": [int, ...] | "prompt": str, "max_tokens": int, "reference": any?}.
Token-id prompts are used as given (no BOS added), so the device sees the ids the GPU build saw.
Result lines: {"id", "output": text, "output_tokens": n, "output_token_ids": [...] (without the end-of-generation
token), "prompt_tokens", "stop_type": "eos"|"limit"|"word", "latency_s": wall time of the request,
"ttft_ms" (= "prompt_ms": the server's prompt processing time; the first token is sampled right after it),
"gen_ms", "prompt_tokens_per_s", "gen_tokens_per_s" (the server's own timings), "peak_rss_mb": llama-server's
VmHWM so far}. Under qemu-user, /proc/cpuinfo and VmHWM describe the host and the emulator.
Exit codes: 0 done (or already done), 1 unexpected, 2 usage or job-dir conflict, 3 bad suite, 4 model file
missing or not GGUF, 5 llama-server missing, failed to start or died, 6 a request failed, 75 job dir locked by
another runner. stdout carries one JSON line ({"status": "done"|"already-done", ...}); progress goes to stderr.
Speeds measured under emulation (qemu) mean nothing; only a real board's numbers do.
--lora FILE applies a LoRA GGUF (a recovery adapter: the manifest's recovery_adapters) on top of the model in
llama-server, so the results and the per-item speeds are the adapted model's. llama-bench (this llama.cpp) has no
--lora, so a job with one records bench.json as skipped: its speeds are llama-server's own timings per item.

Serve mode (edgetune's DeviceRuntime, over one SSH channel): `edgetune_runner.py serve --model FILE.gguf` starts
llama-server once, prints one JSON line {"status": "ready", "n_vocab", "n_ctx", ...}, then answers each JSON line
on stdin with one JSON line on stdout ({"ok": true, "result": ...} or {"ok": false, "error": ...}) until stdin
closes, and stops the server. Requests, all on token ids:
    {"op": "generate", "requests": [{"prompt_ids": [...], "max_new_tokens": n, "stop_ids": [...]}, ...]}
        -> [[new ids], ...]: greedy (argmax of the raw logits, first index on ties), ending before a stop id
    {"op": "loglikelihood", "requests": [[context_ids, continuation_ids], ...]}
        -> [[sum of log-probs, continuation is greedy], ...]: one request per continuation token, each forcing
           that token with a logit bias and reading its probability from the full-vocabulary softmax of the raw
           logits (post_sampling_probs false: computed before any sampler, the bias included, ran)
llama-server reports probabilities as float32 softmax values, so a log-prob carries float32 rounding (~1e-7
relative) and one below about -87 (a probability under float32's normal range) loses precision; below about
-103 it is 0 and the request fails rather than return a wrong number. A fatal error (the server died) ends
serve mode with the {"status": "error"} line and exit code of a job run.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

RUNNER_VERSION = 1
RESULTS, SUMMARY, PROGRESS, JOB, LOG, LOCK = ("results.jsonl", "summary.json", "progress.jsonl", "job.json",
                                              "server.log", ".lock")
BENCH, BENCH_LOG = "bench.json", "bench.log"
EXIT_USAGE, EXIT_SUITE, EXIT_MODEL, EXIT_SERVER, EXIT_REQUEST, EXIT_LOCKED = 2, 3, 4, 5, 6, 75
LOCK_ATTEMPTS = 10  # 0.1 s apart
ARM_PARTS = {("0x41", "0xd03"): "Cortex-A53", ("0x41", "0xd04"): "Cortex-A35", ("0x41", "0xd05"): "Cortex-A55",
             ("0x41", "0xd07"): "Cortex-A57", ("0x41", "0xd08"): "Cortex-A72", ("0x41", "0xd09"): "Cortex-A73",
             ("0x41", "0xd0a"): "Cortex-A75", ("0x41", "0xd0b"): "Cortex-A76", ("0x41", "0xd0d"): "Cortex-A77",
             ("0x41", "0xd41"): "Cortex-A78", ("0x41", "0xd0c"): "Neoverse-N1", ("0x41", "0xd40"): "Neoverse-V1",
             ("0x41", "0xd49"): "Neoverse-N2", ("0x41", "0xd4f"): "Neoverse-V2"}


class RunnerError(Exception):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def log(msg: str) -> None:
    print(f"edgetune-runner: {msg}", file=sys.stderr, flush=True)


# -- files ------------------------------------------------------------------------------------------------

def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_suite(path: str, ctx_size: int) -> list:
    """Parse and check every line before anything runs; RunnerError(EXIT_SUITE) names the first bad line."""
    if not os.path.isfile(path):
        raise RunnerError(f"suite file {path} does not exist", EXIT_SUITE)
    items, seen = [], set()
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise RunnerError(f"{path} line {n}: not UTF-8 text", EXIT_SUITE) from None
            if not line.strip():
                continue
            where = f"{path} line {n}"
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise RunnerError(f"{where}: not JSON ({exc})", EXIT_SUITE) from None
            if not isinstance(row, dict):
                raise RunnerError(f"{where}: expected a JSON object", EXIT_SUITE)
            item_id = row.get("id")
            if isinstance(item_id, bool) or not isinstance(item_id, (str, int)) or item_id == "":
                raise RunnerError(f"{where}: 'id' must be a non-empty string or an integer", EXIT_SUITE)
            if str(item_id) in seen:
                raise RunnerError(f"{where}: duplicate id {item_id!r}", EXIT_SUITE)
            seen.add(str(item_id))
            ids, text = row.get("prompt_ids"), row.get("prompt")
            if (ids is None) == (text is None):
                raise RunnerError(f"{where}: give exactly one of 'prompt_ids' and 'prompt'", EXIT_SUITE)
            if ids is not None and (not isinstance(ids, list) or not ids or not all(
                    isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in ids)):
                raise RunnerError(f"{where}: 'prompt_ids' must be a non-empty list of non-negative integers",
                                  EXIT_SUITE)
            if text is not None and (not isinstance(text, str) or not text):
                raise RunnerError(f"{where}: 'prompt' must be a non-empty string", EXIT_SUITE)
            max_tokens = row.get("max_tokens")
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
                raise RunnerError(f"{where}: 'max_tokens' must be an integer >= 1", EXIT_SUITE)
            if ids is not None and len(ids) + max_tokens > ctx_size:
                raise RunnerError(f"{where}: prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceeds "
                                  f"--ctx-size {ctx_size}", EXIT_SUITE)
            items.append(row)
    if not items:
        raise RunnerError(f"suite file {path} has no items", EXIT_SUITE)
    return items


def read_progress(path: str) -> dict:
    """Finished items by id; a torn last line (a run killed mid-write) is dropped, not trusted."""
    done = {}
    if not os.path.exists(path):
        return done
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "id" in row:
                done[str(row["id"])] = row
    return done


# -- the job dir lock -------------------------------------------------------------------------------------

class JobLock:
    """flock on DIR/.lock: released by the kernel when the holder dies, so a killed run never blocks the next."""

    def __init__(self, job_dir: str):
        self.path = os.path.join(job_dir, LOCK)
        self.fd = -1

    def __enter__(self) -> JobLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        for attempt in range(LOCK_ATTEMPTS):  # a watcher probing the lock holds it for microseconds: retry
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if attempt == LOCK_ATTEMPTS - 1:
                    holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
                    os.close(self.fd)
                    raise RunnerError(f"job dir {os.path.dirname(self.path)} is locked by another runner "
                                      f"(pid {holder})", EXIT_LOCKED) from None
                time.sleep(0.1)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        return self

    def __exit__(self, *exc) -> None:
        os.ftruncate(self.fd, 0)
        os.close(self.fd)  # closing drops the flock


# -- llama-server -----------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Let the kernel stop llama-server if the runner itself is killed (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):  # no prctl (not Linux, or no libc symbol): only a crash leaves a server
        return


def tail(path: str, n_lines: int = 25) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-n_lines:])
    except OSError:
        return "(no log)"


def vm_hwm_mb(pid: int):
    """Peak resident set (VmHWM) of a process in MB, or None when /proc does not say."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


class Server:
    def __init__(self, binary: str, model: str, threads: int, ctx_size: int, flash_attn: str, extra: list,
                 log_path: str, startup_timeout_s: float, lora=None):
        self.port = free_port()
        self.argv = [binary, "-m", model, "-t", str(threads), "-c", str(ctx_size), "-np", "1",
                     "--host", "127.0.0.1", "--port", str(self.port), "-fa", flash_attn, "--cache-ram", "0",
                     "--no-webui", *(["--lora", lora] if lora else []), *extra]
        self.log_path, self.startup_timeout_s = log_path, startup_timeout_s
        self.proc = None
        self.peak_rss_mb = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        log(f"starting {' '.join(self.argv)}")
        with open(self.log_path, "ab") as log_fh:
            try:
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log_fh,
                                             stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)  # noqa: PLW1509 (no threads)
            except OSError as exc:
                raise RunnerError(f"cannot execute {self.argv[0]}: {exc}", EXIT_SERVER) from None
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            code = self.proc.poll()
            if code is not None:
                raise RunnerError(f"llama-server exited with code {code} before it was ready; end of "
                                  f"{self.log_path}:\n{tail(self.log_path)}", EXIT_SERVER)
            try:
                with urllib.request.urlopen(self.url("/health"), timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):  # refused while starting, 503 while loading the model
                pass
            if time.monotonic() > deadline:
                raise RunnerError(f"llama-server was not ready after {self.startup_timeout_s:.0f}s; end of "
                                  f"{self.log_path}:\n{tail(self.log_path)}", EXIT_SERVER)
            time.sleep(0.2)

    def complete(self, body: dict, timeout_s: float) -> dict:
        req = urllib.request.Request(self.url("/completion"), data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise RunnerError(f"llama-server answered HTTP {exc.code}: {detail}", EXIT_REQUEST) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            try:
                self.proc.wait(timeout=2)  # a server that died mid-request may not have been reaped yet
            except subprocess.TimeoutExpired:
                raise RunnerError(f"request to llama-server failed: {exc}", EXIT_REQUEST) from None
            raise RunnerError(f"llama-server died (exit {self.proc.returncode}); end of {self.log_path}:\n"
                              f"{tail(self.log_path)}", EXIT_SERVER) from None

    def get(self, path: str, timeout_s: float = 30.0) -> dict:
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout_s) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RunnerError(f"GET {path} from llama-server failed: {exc}", EXIT_SERVER) from None

    def rss(self):
        if self.proc is not None and self.proc.poll() is None:
            self.peak_rss_mb = vm_hwm_mb(self.proc.pid) or self.peak_rss_mb
        return self.peak_rss_mb

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.rss()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- device facts -----------------------------------------------------------------------------------------

def _read(path: str):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def cpu_model() -> str:
    info = _read("/proc/cpuinfo") or ""
    fields = {}
    for line in info.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    board = (_read("/proc/device-tree/model") or "").strip("\x00\n ") or fields.get("Model")
    core = fields.get("model name") or ARM_PARTS.get((fields.get("CPU implementer"), fields.get("CPU part")))
    if not core and fields.get("CPU part"):
        core = f"ARM implementer {fields.get('CPU implementer')} part {fields.get('CPU part')}"
    return " / ".join(x for x in (board, core) if x) or platform.processor() or "unknown"


def temperature_c():
    """Highest reading of /sys/class/thermal/thermal_zone*/temp, in Celsius; None when none is readable."""
    best = None
    root = "/sys/class/thermal"
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        raw = _read(os.path.join(root, name, "temp"))
        try:
            value = int(raw.strip()) / 1000.0
        except (AttributeError, ValueError):
            continue
        best = value if best is None else max(best, value)
    return best


def throttled():
    """`vcgencmd get_throttled` (Raspberry Pi firmware): 0x0 means never throttled or under-volted."""
    if not shutil.which("vcgencmd"):
        return None
    try:
        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().partition("=")[2] or out.strip() or None


def device_facts() -> dict:
    mem = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            mem[key] = int(value.split()[0]) // 1024
    os_release = {}
    for line in (_read("/etc/os-release") or "").splitlines():
        key, _, value = line.partition("=")
        os_release[key] = value.strip().strip('"')
    return {"machine": platform.machine(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "ram_mb": mem.get("MemTotal"), "ram_available_mb": mem.get("MemAvailable"),
            "os": os_release.get("PRETTY_NAME"), "kernel": platform.release(), "python": platform.python_version(),
            "hostname": socket.gethostname()}


# -- the job ----------------------------------------------------------------------------------------------

def request_body(item: dict) -> dict:
    prompt = item["prompt_ids"] if "prompt_ids" in item and item["prompt_ids"] is not None else item["prompt"]
    return {"prompt": prompt, "n_predict": item["max_tokens"], "temperature": 0.0, "top_k": 1, "seed": 0,
            "cache_prompt": False, "return_tokens": True, "stream": False}


def result_row(item: dict, answer: dict, latency_s: float, peak_rss_mb) -> dict:
    t = answer.get("timings") or {}
    ids = list(answer.get("tokens") or [])
    if answer.get("stop_type") == "eos" and ids:  # llama-server lists the end-of-generation token; drop it
        ids = ids[:-1]
    return {"id": item["id"], "output": answer.get("content", ""), "output_tokens": len(ids),
            "output_token_ids": ids, "prompt_tokens": answer.get("tokens_evaluated"),
            "stop_type": answer.get("stop_type"), "latency_s": round(latency_s, 4),
            "ttft_ms": t.get("prompt_ms"), "prompt_ms": t.get("prompt_ms"), "gen_ms": t.get("predicted_ms"),
            "prompt_tokens_per_s": t.get("prompt_per_second"), "gen_tokens_per_s": t.get("predicted_per_second"),
            "peak_rss_mb": peak_rss_mb}


def summarize(job: dict, rows: list, server_argv, facts: dict, temps: dict, wall_s: float) -> dict:
    def mean(key):
        vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        return round(sum(vals) / len(vals), 3) if vals else None

    latencies = sorted(r["latency_s"] for r in rows)
    rss = [r["peak_rss_mb"] for r in rows if r.get("peak_rss_mb") is not None]
    return {"runner_version": RUNNER_VERSION, "job": job, "items": len(rows),
            "prompt_tokens": sum(r.get("prompt_tokens") or 0 for r in rows),
            "output_tokens": sum(r.get("output_tokens") or 0 for r in rows),
            "mean_prompt_tokens_per_s": mean("prompt_tokens_per_s"), "mean_gen_tokens_per_s": mean("gen_tokens_per_s"),
            "mean_ttft_ms": mean("ttft_ms"), "median_latency_s": latencies[len(latencies) // 2],
            "peak_rss_mb": max(rss) if rss else None, "wall_s": round(wall_s, 2), "server_argv": server_argv,
            "device": {**facts, "temperature_c": temps, "throttled": throttled()},
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def check_model(path: str, what: str = "model") -> None:
    if not os.path.isfile(path):
        raise RunnerError(f"{what} file {path} does not exist", EXIT_MODEL)
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise RunnerError(f"{what} file {path} is not a GGUF file", EXIT_MODEL)


def check_files(args) -> None:
    """The model, and the LoRA adapter when one is given (exit 4 for either)."""
    check_model(args.model)
    if args.lora:
        check_model(args.lora, "LoRA adapter")


def run_bench(args, job_dir: str) -> dict:
    """The bundle's own llama-bench on the job's model, threads and flash-attention setting: one pp<N> and one
    tg<N> test (llama-bench's defaults are 512 and 128), --bench-reps repetitions each. Kept in bench.json, so
    a resumed job does not measure twice. A missing binary or a failed run is recorded, never fatal: the
    evaluation's results stand without it."""
    path = os.path.join(job_dir, BENCH)
    if os.path.exists(path):
        try:
            return json.loads(_read(path) or "")
        except ValueError:
            pass
    if not (args.bench_prompt or args.bench_gen):
        return {"skipped": "--bench-prompt and --bench-gen are 0"}
    if args.lora:
        return {"skipped": "llama-bench cannot apply a LoRA adapter (it has no --lora): the job's speeds are "
                           "llama-server's own timings per item, with the adapter applied"}
    if not os.access(args.bench, os.X_OK):
        return {"skipped": f"no llama-bench at {args.bench}"}
    argv = [args.bench, "-m", args.model, "-t", str(args.threads), "-p", str(args.bench_prompt),
            "-n", str(args.bench_gen), "-r", str(args.bench_reps), "-fa", args.flash_attn, "-o", "json"]
    log(f"llama-bench: pp{args.bench_prompt} tg{args.bench_gen}, {args.bench_reps} repetitions")
    t0 = time.monotonic()
    try:
        with open(os.path.join(job_dir, BENCH_LOG), "ab") as err:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                  timeout=args.bench_timeout_s, preexec_fn=_die_with_parent)  # noqa: PLW1509
        rc, stdout = done.returncode, done.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        rc, stdout = None, ""
    out = {"argv": argv, "exit_code": rc, "wall_s": round(time.monotonic() - t0, 2), "tests": []}
    try:
        records = json.loads(stdout) if rc == 0 else []
    except ValueError:
        records = []
    for rec in records if isinstance(records, list) else []:
        n_prompt, n_gen = int(rec.get("n_prompt") or 0), int(rec.get("n_gen") or 0)
        test = f"pp{n_prompt}" if n_prompt and not n_gen else f"tg{n_gen}" if n_gen and not n_prompt else "pg"
        out["tests"].append({"test": test, "n_prompt": n_prompt, "n_gen": n_gen, "n_threads": rec.get("n_threads"),
                             "avg_ts": rec.get("avg_ts"), "stddev_ts": rec.get("stddev_ts"),
                             "samples_ts": rec.get("samples_ts")})
        for key in ("cpu_info", "model_type", "model_size", "model_n_params", "build_commit"):
            out.setdefault(key, rec.get(key))
    by_kind = {t["test"][:2]: t["avg_ts"] for t in out["tests"]}
    out.update(prompt_tokens_per_s=by_kind.get("pp"), gen_tokens_per_s=by_kind.get("tg"))
    if not out["tests"]:
        why = "timed out" if rc is None else f"exited {rc}"
        out["error"] = (f"llama-bench {why} with no results (see {BENCH_LOG}): "
                        + tail(os.path.join(job_dir, BENCH_LOG), 3).strip().replace("\n", " | "))
    write_atomic(path, json.dumps(out, indent=2) + "\n")
    return out


def run_job(args) -> dict:
    job_dir = args.job_dir
    results_path = os.path.join(job_dir, RESULTS)
    if os.path.exists(results_path) and not args.force:
        return {"status": "already-done", "results": results_path, "summary": os.path.join(job_dir, SUMMARY)}
    check_files(args)
    items = load_suite(args.suite, args.ctx_size)
    job = {"model": os.path.abspath(args.model), "model_size_bytes": os.path.getsize(args.model),
           "suite": os.path.abspath(args.suite), "suite_sha256": sha256_file(args.suite), "threads": args.threads,
           "ctx_size": args.ctx_size, "flash_attn": args.flash_attn, "server_args": args.server_arg,
           "bench": [args.bench_prompt, args.bench_gen, args.bench_reps]}
    if args.lora:  # only when given: a job without one keeps the job.json an earlier runner wrote
        job.update(lora=os.path.abspath(args.lora), lora_size_bytes=os.path.getsize(args.lora))
    os.makedirs(job_dir, exist_ok=True)
    with JobLock(job_dir):
        if os.path.exists(results_path) and not args.force:  # another runner finished while we waited
            return {"status": "already-done", "results": results_path, "summary": os.path.join(job_dir, SUMMARY)}
        job_path, progress_path = os.path.join(job_dir, JOB), os.path.join(job_dir, PROGRESS)
        if args.force:
            for name in (RESULTS, SUMMARY, PROGRESS, JOB, BENCH):
                if os.path.exists(os.path.join(job_dir, name)):
                    os.unlink(os.path.join(job_dir, name))
        if os.path.exists(job_path):
            try:
                previous = json.loads(_read(job_path) or "")
            except ValueError:
                previous = None
            if previous != job:
                raise RunnerError(f"job dir {job_dir} holds a different job ({JOB} does not match these "
                                  "arguments)", EXIT_USAGE)
        else:
            write_atomic(job_path, json.dumps(job, indent=2) + "\n")
        done = read_progress(progress_path)
        todo = [it for it in items if str(it["id"]) not in done]
        if done:
            log(f"resuming: {len(items) - len(todo)} of {len(items)} items already done")
        started = time.monotonic()
        temps = {"start": temperature_c(), "end": None}
        server = None
        if todo:
            server = Server(args.server, args.model, args.threads, args.ctx_size, args.flash_attn, args.server_arg,
                            os.path.join(job_dir, LOG), args.startup_timeout_s, lora=args.lora)
            try:
                server.start()
                with open(progress_path, "a", encoding="utf-8") as prog:
                    for n, item in enumerate(todo, 1):
                        t0 = time.monotonic()
                        answer = server.complete(request_body(item), args.item_timeout_s)
                        row = result_row(item, answer, time.monotonic() - t0, server.rss())
                        prog.write(json.dumps(row) + "\n")
                        prog.flush()
                        os.fsync(prog.fileno())
                        done[str(item["id"])] = row
                        log(f"[{n}/{len(todo)}] {item['id']}: {row['output_tokens']} tokens, "
                            f"{row['gen_tokens_per_s'] or 0:.1f} tok/s")
            finally:
                server.stop()
        temps["end"] = temperature_c()
        bench = run_bench(args, job_dir)  # after the server stopped: the two never share the cores
        rows = [done[str(it["id"])] for it in items]
        summary = summarize(job, rows, server.argv if server else None, device_facts(), temps,
                            time.monotonic() - started)
        summary["bench"] = bench
        if server is not None and server.peak_rss_mb is not None:
            summary["peak_rss_mb"] = max(summary["peak_rss_mb"] or 0, server.peak_rss_mb)
        write_atomic(os.path.join(job_dir, SUMMARY), json.dumps(summary, indent=2) + "\n")
        write_atomic(results_path, "".join(json.dumps(r) + "\n" for r in rows))
    return {"status": "done", "results": results_path, "summary": os.path.join(job_dir, SUMMARY),
            "items": len(rows), "ran": len(todo)}


# -- serve mode (see the module docstring) -----------------------------------------------------------------

# only the temperature sampler (temperature 0 keeps the first highest logit) after llama.cpp's logit bias;
# cache_prompt lets a request reuse the slot's KV cache for the prefix it shares with the previous one
GREEDY = {"temperature": 0.0, "samplers": ["temperature"], "seed": 0, "cache_prompt": True, "return_tokens": True,
          "stream": False}
FORCE_BIAS = 1e9  # added to the forced token's logit: beats any logit gap, so that token is the one sampled
UNDERFLOW_LOGPROB = -1e30  # llama-server writes log(0) as float32's lowest value


def token_ids(value, what: str, *, empty_ok: bool = False) -> list:
    if not isinstance(value, list) or (not value and not empty_ok) or not all(
            isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value):
        raise ValueError(f"{what} must be a {'' if empty_ok else 'non-empty '}list of non-negative integers")
    return value


def serve_generate(server: Server, req: dict, timeout_s: float) -> list:
    """Greedy ids after prompt_ids, ending before the first stop id. llama-server ends a completion by itself at
    an end-of-generation token; one that is not a stop id is kept and decoding goes on after it."""
    prompt = token_ids(req.get("prompt_ids"), "prompt_ids")
    limit, stops = req.get("max_new_tokens"), set(token_ids(req.get("stop_ids", []), "stop_ids", empty_ok=True))
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError("max_new_tokens must be an integer >= 0")
    out = []
    while len(out) < limit:
        answer = server.complete({"prompt": prompt + out, "n_predict": limit - len(out), **GREEDY}, timeout_s)
        tokens = answer.get("tokens") or []
        if not tokens:
            raise RunnerError(f"llama-server returned no tokens (stop_type {answer.get('stop_type')})",
                              EXIT_REQUEST)
        for tok in tokens:
            if tok in stops:
                return out
            out.append(tok)
    return out[:limit]


def serve_token_logprob(server: Server, prompt: list, token: int, timeout_s: float) -> tuple:
    """(log p(token | prompt), token is the argmax) at the prompt's last position; see the module docstring."""
    answer = server.complete({"prompt": prompt, "n_predict": 1, "n_probs": 1, "post_sampling_probs": False,
                              "logit_bias": [[token, FORCE_BIAS]], **GREEDY}, timeout_s)
    probs = (answer.get("completion_probabilities") or [{}])[0]
    top = (probs.get("top_logprobs") or [{}])[0]
    if probs.get("id") != token or "logprob" not in probs or "logprob" not in top:
        raise RunnerError(f"llama-server did not score token {token} (it answered {str(probs)[:200]}); is the "
                          "token id inside the vocabulary and not suppressed?", EXIT_REQUEST)
    logprob = float(probs["logprob"])
    if logprob <= UNDERFLOW_LOGPROB:
        raise RunnerError(f"token {token} has a probability below float32's range in llama-server (log-prob "
                          "under about -103): it cannot be scored exactly here", EXIT_REQUEST)
    greedy = top["id"] == token or (float(top["logprob"]) == logprob and token < top["id"])
    return logprob, greedy


def serve_loglikelihood(server: Server, requests, timeout_s: float) -> list:
    if not isinstance(requests, list) or not all(isinstance(r, list) and len(r) == 2 for r in requests):
        raise ValueError("loglikelihood requests must be [[context_ids, continuation_ids], ...]")
    pairs = [(token_ids(c, "context_ids"), token_ids(x, "continuation_ids")) for c, x in requests]
    # lexicographic order puts shared prefixes next to each other: each request then extends the cached one
    order = sorted(range(len(pairs)), key=lambda i: pairs[i][0] + pairs[i][1])
    results = [None] * len(pairs)
    for i in order:
        ctx, cont = pairs[i]
        total, greedy = 0.0, True
        for j, tok in enumerate(cont):
            logprob, top = serve_token_logprob(server, ctx + cont[:j], tok, timeout_s)
            total += logprob
            greedy = greedy and top
        results[i] = [total, greedy]
    return results


def serve_one(server: Server, request: dict, timeout_s: float):
    op = request.get("op") if isinstance(request, dict) else None
    if op == "generate":
        reqs = request.get("requests")
        if not isinstance(reqs, list) or not all(isinstance(r, dict) for r in reqs):
            raise ValueError("generate requests must be a list of objects")
        return [serve_generate(server, r, timeout_s) for r in reqs]
    if op == "loglikelihood":
        return serve_loglikelihood(server, request.get("requests"), timeout_s)
    raise ValueError(f"unknown op {op!r} (expected generate or loglikelihood)")


def say(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(args) -> int:
    check_files(args)
    log_path = args.log_file
    if log_path is None:
        fd, log_path = tempfile.mkstemp(prefix="edgetune-serve-", suffix=".log")
        os.close(fd)
    server = Server(args.server, args.model, args.threads, args.ctx_size, args.flash_attn, args.server_arg,
                    log_path, args.startup_timeout_s, lora=args.lora)
    try:
        server.start()
        meta = (server.get("/v1/models").get("data") or [{}])[0].get("meta") or {}
        say({"status": "ready", "runner_version": RUNNER_VERSION, "n_vocab": meta.get("n_vocab"),
             "n_ctx": meta.get("n_ctx"), "model": os.path.abspath(args.model),
             "lora": os.path.abspath(args.lora) if args.lora else None, "server_argv": server.argv,
             "server_log": log_path, "device": device_facts()})
        while True:
            line = sys.stdin.readline()
            if not line:
                break  # stdin closed: the client is done (or its connection is gone)
            if not line.strip():
                continue
            try:
                reply = {"ok": True, "result": serve_one(server, json.loads(line), args.request_timeout_s)}
            except ValueError as exc:
                reply = {"ok": False, "error": f"bad request: {exc}"}
            except RunnerError as exc:
                if exc.exit_code == EXIT_SERVER:
                    raise
                reply = {"ok": False, "error": str(exc)}
            reply["peak_rss_mb"] = server.rss()
            say(reply)
    finally:
        server.stop()
    return 0


def _bundle_defaults():
    """(bundle folder, the manifest's target, its default model file) for the runner shipped in a bundle."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)  # the bundle folder: runner/ sits in it
    manifest = {}
    try:
        manifest = json.loads(_read(os.path.join(root, "manifest.json")) or "{}")
    except ValueError:
        pass
    default_model = manifest.get("default_model")
    return root, manifest.get("target") or {}, os.path.join(root, default_model) if default_model else None


def _server_options(p, root: str, target: dict) -> None:
    p.add_argument("--server", default=os.path.join(root, "bin", "llama-server"), help="llama-server binary")
    p.add_argument("--lora", default=None, help="LoRA GGUF llama-server applies on top of --model (e.g. the "
                                                "manifest's recovery adapter for that model)")
    p.add_argument("--threads", type=int, default=target.get("cores") or os.cpu_count() or 1,
                   help="llama.cpp threads (default: the target's cores, else all CPUs)")
    p.add_argument("--ctx-size", type=int, default=target.get("context_length") or 2048, help="context, tokens")
    p.add_argument("--flash-attn", choices=["on", "off", "auto"], default="off",
                   help="off (default) matches the host's llama-cpp-python evaluation of the same GGUF")
    p.add_argument("--server-arg", action="append", default=[],
                   help="extra llama-server argument (repeatable; write --server-arg=--flag for a flag)")
    p.add_argument("--startup-timeout-s", type=float, default=300.0, help="wait for /health at most this long")


def _check(p, args) -> None:
    if args.model is None:
        p.error("--model is required (no manifest.json with a default_model beside runner/)")
    if args.threads < 1 or args.ctx_size < 16:
        p.error("--threads must be >= 1 and --ctx-size >= 16")


def parse_args(argv):
    root, target, default_model = _bundle_defaults()
    p = argparse.ArgumentParser(prog="edgetune_runner.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--job-dir", required=True, help="folder for this job's results, lock and logs")
    p.add_argument("--model", default=default_model, help="GGUF file (default: the manifest's default_model)")
    p.add_argument("--suite", default=os.path.join(root, "suite", "heldout.jsonl"), help="eval suite JSONL")
    _server_options(p, root, target)
    p.add_argument("--item-timeout-s", type=float, default=900.0, help="one /completion request at most this long")
    p.add_argument("--force", action="store_true", help="discard earlier results and progress in --job-dir")
    p.add_argument("--bench", default=os.path.join(root, "bin", "llama-bench"), help="llama-bench binary")
    p.add_argument("--bench-prompt", type=int, default=512, help="llama-bench prompt test, tokens (0: none)")
    p.add_argument("--bench-gen", type=int, default=128, help="llama-bench generation test, tokens (0: none)")
    p.add_argument("--bench-reps", type=int, default=3, help="llama-bench repetitions of each test")
    p.add_argument("--bench-timeout-s", type=float, default=1800.0, help="llama-bench at most this long")
    args = p.parse_args(argv)
    if min(args.bench_prompt, args.bench_gen) < 0 or args.bench_reps < 1:
        p.error("--bench-prompt/--bench-gen must be >= 0 and --bench-reps >= 1")
    _check(p, args)
    return args


def parse_serve_args(argv):
    root, target, default_model = _bundle_defaults()
    p = argparse.ArgumentParser(prog="edgetune_runner.py serve",
                                description="Keep llama-server running and answer JSON-line requests on stdin "
                                            "(see `edgetune_runner.py --help`).")
    p.add_argument("--model", default=default_model, help="GGUF file (default: the manifest's default_model)")
    _server_options(p, root, target)
    p.add_argument("--request-timeout-s", type=float, default=900.0,
                   help="one llama-server request at most this long")
    p.add_argument("--log-file", default=None, help="llama-server's output (default: a new temp file)")
    args = p.parse_args(argv)
    _check(p, args)
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    serving = bool(argv) and argv[0] == "serve"
    args = parse_serve_args(argv[1:]) if serving else parse_args(argv)  # argparse exits with 2 on usage errors

    def on_signal(signum, _frame):
        raise RunnerError(f"stopped by signal {signum}", 128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        if serving:
            return serve(args)
        outcome = run_job(args)
    except RunnerError as exc:
        print(f"edgetune-runner: error: {exc}", file=sys.stderr, flush=True)
        print(json.dumps({"status": "error", "exit_code": exc.exit_code, "error": str(exc).splitlines()[0]}),
              flush=True)
        return exc.exit_code
    print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
