// The `mlup-storage` binary, built from src/ with tsc and spawned as a real
// process against real files and the test HTTP server on 127.0.0.1.
import { beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { execFileSync, spawn } from "node:child_process"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { ExitCode as Cli } from "../src/Cli.js"
import * as progressView from "../src/cli/progress.js"
import * as Progress from "../src/Progress.js"
import { keyOf as cacheKeyOf } from "../src/internal/cache/folder.js"
import { archiveOf, bytesOf, checkpointed, entriesUnder, fingerprint, tempDir, untilCheckpointed, writeFiles } from "./helpers.js"
import * as Azurite from "./servers/azurite.js"
import * as Hub from "./servers/hub.js"
import * as Registry from "./servers/registry.js"
import * as TestServer from "./servers/http.js"
import * as S3 from "./servers/s3.js"

const root = path.resolve(import.meta.dirname, "..")
// The command as it is published (the launcher and its bundle), built from src/
// inside node_modules, so that the bundle finds the AWS SDK, and apart from
// dist/ (which the packed-package test rebuilds at the same time).
const build = path.join(root, "node_modules", ".cache", "mlup-storage-cli-test")
const bin = path.join(build, "bin.js")
// The children's cache folders (V8's code cache of the command among them).
const xdgCache = path.join(build, "xdg-cache")

beforeAll(() => {
  fs.rmSync(build, { recursive: true, force: true })
  execFileSync(process.execPath, [path.join(root, "scripts/bundle-bin.mjs"), build], { cwd: root, stdio: "inherit" })
}, 120_000)

interface Run {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

/**
 * The environment without any STORAGE_*, AWS_* or proxy variable of the
 * machine running the tests; the AWS SDK finds no profile and never asks an
 * instance-metadata address (no traffic off loopback).
 */
const cleanEnv = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^((MLUP_)?STORAGE_|AWS_|HF_|HUGGING_FACE_|AZURE_|GCS_|(HTTPS?|NO)_PROXY$)/i.test(key)) env[key] = value
  }
  return {
    ...env,
    AWS_EC2_METADATA_DISABLED: "true",
    AWS_CONFIG_FILE: "/nonexistent/aws-config",
    AWS_SHARED_CREDENTIALS_FILE: "/nonexistent/aws-credentials",
    HF_TOKEN_PATH: "/nonexistent/hf-token",
    XDG_CACHE_HOME: xdgCache,
    ...extra
  }
}

const start = (args: ReadonlyArray<string>, env: Record<string, string> = {}, cwd?: string) => {
  const child = spawn(process.execPath, [bin, ...args], {
    env: cleanEnv(env),
    stdio: ["ignore", "pipe", "pipe"],
    ...(cwd === undefined ? {} : { cwd })
  })
  let stdout = ""
  let stderr = ""
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
  const done = new Promise<Run>((resolve) =>
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }))
  )
  return { child, done, stderr: () => stderr }
}

const cli = (args: ReadonlyArray<string>, env: Record<string, string> = {}): Effect.Effect<Run> =>
  Effect.promise(() => start(args, env).done)

/** `mlup-storage fetch -t TYPE -k KWARGS ...flags` */
const fetchWith = (storageType: string, kwargs: object, ...flags: ReadonlyArray<string>): Effect.Effect<Run> =>
  cli(["fetch", "-t", storageType, "-k", JSON.stringify(kwargs), ...flags])

const sha256 = (bytes: Uint8Array | string) => crypto.createHash("sha256").update(bytes).digest("hex")

// Every name under `dir` (none if it is absent), relative, sorted.
const listAll = (dir: string): Array<string> =>
  fs.existsSync(dir)
    ? entriesUnder(dir).map((entry) => path.relative(dir, path.join(entry.parentPath, entry.name))).sort()
    : []

const model = bytesOf(2 * 1024 * 1024 + 5, 3)

describe("mlup-storage (the built binary)", () => {
  it.live("--help works on every command and lists the options", () =>
    Effect.gen(function*() {
      const top = yield* cli(["--help"])
      expect(top.code).toBe(0)
      expect(top.stdout).toContain("fetch")
      expect(top.stdout).toContain("check")
      const fetch = yield* cli(["fetch", "--help"])
      expect(fetch.code).toBe(0)
      for (const flag of ["--storage-type", "--kwargs", "--config", "--to", "--hash", "--json"]) {
        expect(fetch.stdout).toContain(flag)
      }
      const check = yield* cli(["check", "--help"])
      expect(check.code).toBe(0)
      expect(check.stdout).toContain("--config")
    }))

  it.scopedLive("starts from V8's code cache in the user's cache folder once one run wrote it; a refused cache is replaced", () =>
    Effect.gen(function*() {
      const home = yield* tempDir
      const folder = path.join(home, "mlup-storage", "compile-cache")
      const first = yield* cli(["--version"], { XDG_CACHE_HOME: home })
      expect(first.code).toBe(0)
      const written = fs.readdirSync(folder)
      expect(written).toHaveLength(1)
      expect(written[0]).toMatch(new RegExp(`^main-${process.version}-${process.arch}-\\d+-\\d+\\.v8$`))
      const cacheFile = path.join(folder, written[0]!)
      expect(fs.statSync(cacheFile).mode & 0o777).toBe(0o600)
      const before = fs.statSync(cacheFile).mtimeMs
      // An accepted cache is not written again.
      const second = yield* cli(["--version"], { XDG_CACHE_HOME: home })
      expect(second.stdout).toBe(first.stdout)
      expect(fs.statSync(cacheFile).mtimeMs).toBe(before)
      // Garbage in the cache: V8 refuses it, the run is the same, and the cache is written anew
      // (and the cache of an older bundle goes).
      fs.writeFileSync(cacheFile, "not V8's code")
      fs.writeFileSync(path.join(folder, "main-v0.0.0-x64-1-1.v8"), "old")
      const third = yield* cli(["--help"], { XDG_CACHE_HOME: home })
      expect(third.code).toBe(0)
      expect(third.stdout).toContain("fetch")
      expect(fs.statSync(cacheFile).size).toBeGreaterThan(100_000)
      expect(fs.readdirSync(folder)).toEqual(written)
      // Turned off, nothing is written.
      const off = yield* tempDir
      expect((yield* cli(["--version"], { XDG_CACHE_HOME: off, NODE_DISABLE_COMPILE_CACHE: "1" })).code).toBe(0)
      expect(fs.readdirSync(off)).toEqual([])
      // A cache folder that cannot be written: the command runs all the same.
      fs.rmSync(path.join(home, "mlup-storage"), { recursive: true })
      fs.writeFileSync(path.join(home, "mlup-storage"), "a file where the folder would go")
      const unwritable = yield* cli(["--version"], { XDG_CACHE_HOME: home })
      expect(unwritable.code).toBe(0)
      expect(unwritable.stderr).toBe("")
    }))

  it.scopedLive("runs a custom storage named by its module (the module's own copy of the library and effect)", () =>
    Effect.gen(function*() {
      const custom = path.join(root, "test/fixtures/custom-storage.ts")
      const run = (kwargs: unknown, ...flags: Array<string>) =>
        Effect.promise(() =>
          new Promise<Run>((resolve) => {
            // tsx, so that the module (TypeScript, importing the library's src/) can be imported.
            const child = spawn(process.execPath, ["--import", "tsx", bin, "fetch", "-t", `${custom}#greetings`, "-k", JSON.stringify(kwargs), ...flags], {
              env: cleanEnv(),
              cwd: root,
              stdio: ["ignore", "pipe", "pipe"]
            })
            let stdout = ""
            let stderr = ""
            child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
            child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
            child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }))
          })
        )
      const ok = yield* run({ greeting: "hi", times: 2, password: "hunter2" }, "--json")
      expect(ok.code).toBe(0)
      expect(JSON.parse(ok.stdout)).toMatchObject({ ok: true, files: [{ name: "greeting.txt", size: 5 }] })
      const invalid = yield* run({ greeting: 3, password: "hunter2" }, "--json")
      expect(invalid.code).toBe(Cli.InvalidConfiguration)
      expect(JSON.parse(invalid.stdout).errors[0].tag).toBe("InvalidStorageOptions")
      expect(invalid.stdout).not.toContain("hunter2")
    }))

  it.scopedLive("fetch --to --hash --json: the files are placed, complete, and described", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "models/a.pckl": model, "models/b.pckl": "weights", "models/notes.txt": "no" })
      const to = path.join(dir, "out")
      const run = yield* cli([
        "fetch",
        "--storage-type",
        "disk",
        "--kwargs",
        JSON.stringify({ path_to_files: path.join(dir, "models") }),
        "--to",
        to,
        "--hash",
        "--json"
      ])
      expect(run.code).toBe(0)
      const result = JSON.parse(run.stdout)
      expect(result).toEqual({
        ok: true,
        storageType: "disk",
        to,
        files: [
          { name: "a.pckl", path: path.join(to, "a.pckl"), size: model.byteLength, kind: "path", sha256: sha256(model) },
          { name: "b.pckl", path: path.join(to, "b.pckl"), size: 7, kind: "path", sha256: sha256("weights") }
        ]
      })
      // Exactly the files: no staging folder left behind.
      expect(listAll(to)).toEqual(["a.pckl", "b.pckl"])
      expect(sha256(fs.readFileSync(path.join(to, "a.pckl")))).toBe(sha256(model))
    }))

  it.scopedLive("fetch prints a table of the files (path, size, sha256 with --hash)", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "m.pckl": "12345" })
      const run = yield* fetchWith("disk", { path_to_files: path.join(dir, "m.pckl") }, "--hash")
      expect(run.code).toBe(0)
      const lines = run.stdout.trimEnd().split("\n")
      expect(lines[0]).toMatch(/^name\s+size\s+path\s+sha256$/)
      expect(lines[1]!.split(/\s{2,}/)).toEqual(["m.pckl", "5 B", path.join(dir, "m.pckl"), sha256("12345")])
    }))

  it.scopedLive("reads mlup's own config files (the ml section), in YAML and JSON; flags win", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "models/a.pckl": "a", "models/b.pckl": "bb" })
      const yaml = path.join(dir, "mlup.yaml")
      fs.writeFileSync(
        yaml,
        [
          "version: '1'",
          "ml:",
          "  name: MyModel",
          "  storage_type: mlup.ml.storage.local_disk.DiskStorage",
          "  storage_kwargs:",
          `    path_to_files: ${path.join(dir, "models")}`,
          "    file_mask: 'b\\.pckl'",
          "web:",
          "  port: 8009",
          ""
        ].join("\n")
      )
      const fromYaml = yield* cli(["fetch", "--config", yaml, "--json"])
      expect(fromYaml.code).toBe(0)
      expect(JSON.parse(fromYaml.stdout).files.map((file: { name: string }) => file.name)).toEqual(["b.pckl"])

      const json = path.join(dir, "mlup.json")
      fs.writeFileSync(json, JSON.stringify({ ml: { storage_type: "disk", storage_kwargs: { path_to_files: path.join(dir, "models") } } }))
      const fromJson = yield* cli(["fetch", "-c", json, "--json", "-k", JSON.stringify({ file_mask: "a\\.pckl" })])
      expect(fromJson.code).toBe(0)
      expect(JSON.parse(fromJson.stdout).files.map((file: { name: string }) => file.name)).toEqual(["a.pckl"])
    }))

  it.scopedLive("reads the library's Config from the environment when no flag names a storage", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "a.pckl": "a", "b.onnx": "b" })
      const run = yield* cli(["fetch", "--json", "--env-prefix", "MLUP"], {
        MLUP_STORAGE_TYPE: "disk",
        MLUP_STORAGE_KWARGS_PATH_TO_FILES: dir,
        MLUP_STORAGE_KWARGS_FILE_MASK: "\\.onnx$"
      })
      expect(run.code).toBe(0)
      expect(JSON.parse(run.stdout).files.map((file: { name: string }) => file.name)).toEqual(["b.onnx"])
    }))

  it.scopedLive("fetches over HTTP into its cache, and logs plain progress lines when stderr is not a terminal", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make({ chunkSize: 256 * 1024 })
      server.put("/m.onnx", model)
      const dir = yield* tempDir
      const run = yield* fetchWith(
        "http",
        { urls: server.url("/m.onnx"), cache_dir: path.join(dir, "cache"), sha256: sha256(model) },
        "--to",
        path.join(dir, "out"),
        "--json"
      )
      expect(run.code).toBe(0)
      expect(run.stderr).toMatch(/^fetching m\.onnx \(2\.00 MiB\)$/m)
      expect(run.stderr).toMatch(/^fetched {2}m\.onnx \(2\.00 MiB\) in \d+\.\d s/m)
      expect(run.stderr).not.toContain("\x1b[")
      expect(sha256(fs.readFileSync(path.join(dir, "out", "m.onnx")))).toBe(sha256(model))
      // A second run finds the cached copy current (one more request: a 304).
      const again = yield* fetchWith("http", { urls: server.url("/m.onnx"), cache_dir: path.join(dir, "cache") })
      expect(again.code).toBe(0)
      expect(again.stderr).toMatch(/^cached {3}m\.onnx/m)
      expect(server.requests("/m.onnx").map((request) => request.status)).toEqual([200, 304])
    }))
})

describe("mlup-storage against S3 (s3rver)", () => {
  it.scopedLive("fetches the keys a mask selects into --to, with sub-folders; a wrong access key is unauthorized", () =>
    Effect.gen(function*() {
      const server = yield* S3.make(["models"])
      yield* Effect.promise(() => server.put("models", "iris/v1/model.onnx", model))
      yield* Effect.promise(() => server.put("models", "iris/v1/extra/labels.json", "[]"))
      yield* Effect.promise(() => server.put("models", "iris/v1/README.md", "no"))
      const dir = yield* tempDir
      const kwargs = {
        bucket: "models",
        path_to_files: "iris/v1/",
        file_mask: "\\.(onnx|json)$",
        endpoint: server.endpoint,
        access_key_id: S3.accessKeyId,
        secret_access_key: S3.secretAccessKey,
        cache_dir: path.join(dir, "cache")
      }
      const to = path.join(dir, "out")
      const run = yield* fetchWith("s3", kwargs, "--to", to, "--hash", "--json")
      expect(run.code).toBe(0)
      expect(JSON.parse(run.stdout).files).toEqual([
        { name: "extra/labels.json", path: path.join(to, "extra/labels.json"), size: 2, kind: "path", sha256: sha256("[]") },
        { name: "model.onnx", path: path.join(to, "model.onnx"), size: model.byteLength, kind: "path", sha256: sha256(model) }
      ])
      expect(listAll(to)).toEqual(["extra", "extra/labels.json", "model.onnx"])
      const denied = yield* fetchWith("s3", { ...kwargs, access_key_id: "NOT-A-KEY" })
      expect(denied.code).toBe(Cli.Unauthorized)
      expect(denied.stdout + denied.stderr).not.toContain(S3.secretAccessKey)
    }))

  it.scopedLive("two processes fetching the same model into one cache at once: each object downloaded once", () =>
    Effect.gen(function*() {
      const server = yield* S3.make(["models"])
      // Large enough (8 ranged parts) for the two downloads to overlap.
      const weights = new Uint8Array(crypto.randomBytes(128 * 1024 * 1024))
      yield* Effect.promise(() => server.put("models", "m/model.onnx", model))
      yield* Effect.promise(() => server.put("models", "m/weights.bin", weights))
      const dir = yield* tempDir
      const args = [
        "--log-level",
        "info",
        "fetch",
        "-t",
        "s3",
        "-k",
        JSON.stringify({
          bucket: "models",
          path_to_files: "m/",
          file_mask: ".",
          endpoint: server.endpoint,
          access_key_id: S3.accessKeyId,
          secret_access_key: S3.secretAccessKey,
          cache_dir: path.join(dir, "cache")
        }),
        "--hash",
        "--json"
      ]
      const [a, b] = yield* Effect.promise(() => Promise.all([start(args).done, start(args).done]))
      expect([a.code, b.code]).toEqual([0, 0])
      const hashes = (run: Run) =>
        JSON.parse(run.stdout).files.map((file: { name: string; sha256: string }) => [file.name, file.sha256])
      const expected = [["model.onnx", sha256(model)], ["weights.bin", sha256(weights)]]
      expect(hashes(a)).toEqual(expected)
      expect(hashes(b)).toEqual(expected)
      // One process downloaded; the other waited for its lock and found the snapshot complete.
      const waited = [a, b].filter((run) => run.stderr.includes("Waiting for the lock of"))
      expect(waited).toHaveLength(1)
      expect(server.gets("m/model.onnx")).toHaveLength(1)
      expect(server.gets("m/weights.bin")).toHaveLength(8)
    }))

  it.scopedLive("a killed downloader: the next process takes over its lock and fetches only the parts still missing", () =>
    Effect.gen(function*() {
      const server = yield* S3.make(["models"])
      const weights = new Uint8Array(crypto.randomBytes(128 * 1024 * 1024))
      yield* Effect.promise(() => server.put("models", "m/weights.bin", weights))
      const dir = yield* tempDir
      const cache = path.join(dir, "cache")
      const kwargs = {
        bucket: "models",
        path_to_files: "m/weights.bin",
        file_mask: "weights",
        endpoint: server.endpoint,
        access_key_id: S3.accessKeyId,
        secret_access_key: S3.secretAccessKey,
        cache_dir: cache
      }
      const first = start(["fetch", "-t", "s3", "-k", JSON.stringify(kwargs)])
      // Wait until the first process has two of its eight parts on disk (recorded), then kill it.
      const recordedParts = () => {
        const record = listAll(cache).find((file) => /partials\/[^/]+\.json$/.test(file))
        if (record === undefined) return 0
        try {
          return Object.keys(JSON.parse(fs.readFileSync(path.join(cache, record), "utf8")).parts).length
        } catch {
          return 0
        }
      }
      yield* Effect.promise(async () => {
        while (recordedParts() < 2) await new Promise((resolve) => setTimeout(resolve, 5))
      })
      first.child.kill("SIGKILL")
      expect((yield* Effect.promise(() => first.done)).signal).toBe("SIGKILL")
      expect(listAll(cache).some((file) => file.endsWith("lock"))).toBe(true)
      const kept = recordedParts()
      const getsBefore = server.gets("m/weights.bin").length

      const second = yield* fetchWith("s3", kwargs, "--hash", "--json")
      expect(second.code).toBe(0)
      expect(second.stderr).toContain("Took over the lock")
      expect(JSON.parse(second.stdout).files).toMatchObject([{ name: "weights.bin", sha256: sha256(weights) }])
      // The parts on disk were kept: only the missing ones were fetched again.
      expect(server.gets("m/weights.bin").length - getsBefore).toBe(8 - kept)
      expect(listAll(cache).filter((file) => /staging-|partials\/./.test(file))).toEqual([])
    }))
})

describe("mlup-storage exit codes", () => {
  it.scopedLive(`invalid configuration: ${Cli.InvalidConfiguration}, every problem printed (check does not fetch)`, () =>
    Effect.gen(function*() {
      const run = yield* cli([
        "check",
        "-t",
        "disk",
        "-k",
        JSON.stringify({ path_to_files: 3, need_load_file: "maybe", pasword: "x" })
      ])
      expect(run.code).toBe(Cli.InvalidConfiguration)
      expect(run.stderr).toContain("  - path_to_files: Expected string")
      expect(run.stderr).toContain("  - need_load_file: must be true or false")
      expect(run.stderr).toContain("  - pasword: is unexpected")
      const json = yield* cli(["check", "-t", "nope", "--json"])
      expect(json.code).toBe(Cli.InvalidConfiguration)
      expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, exitCode: 2, errors: [{ tag: "UnknownStorageType" }] })
      const dir = yield* tempDir
      const bad = path.join(dir, "bad.yaml")
      fs.writeFileSync(bad, "ml: [unclosed\n")
      const file = yield* cli(["check", "-c", bad, "-k", "{not json"])
      expect(file.code).toBe(Cli.InvalidConfiguration)
      expect(file.stderr).toContain(`error: The config file ${bad} is not valid YAML`)
      expect(file.stderr).toContain("error: --kwargs: is not valid JSON")
      const usage = yield* cli(["fetch", "--no-such-flag"])
      expect(usage.code).toBe(Cli.InvalidConfiguration)
      const nothing = yield* cli(["fetch"])
      expect(nothing.code).toBe(Cli.InvalidConfiguration)
      expect(nothing.stderr).toContain("name a storage to fetch from")
      // A valid configuration passes check without touching the (absent) path.
      const ok = yield* cli(["check", "-t", "disk", "-k", JSON.stringify({ path_to_files: path.join(dir, "absent") })])
      expect(ok.code).toBe(0)
      expect(ok.stdout).toContain("ok: the disk storage's options are valid")
    }))

  it.scopedLive(`not found: ${Cli.NotFound} (a missing path, a mask that matches nothing, an HTTP 404)`, () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "a.txt": "a" })
      const missing = yield* fetchWith("disk", { path_to_files: path.join(dir, "absent") })
      expect(missing.code).toBe(Cli.NotFound)
      expect(missing.stderr).toContain("check path_to_files")
      const mask = yield* fetchWith("disk", { path_to_files: dir }, "--json")
      expect(mask.code).toBe(Cli.NotFound)
      expect(JSON.parse(mask.stdout)).toMatchObject({ ok: false, exitCode: Cli.NotFound, errors: [{ tag: "NothingMatched" }] })
      const server = yield* TestServer.make()
      const http = yield* fetchWith("http", { urls: server.url("/none"), cache_dir: path.join(dir, "c") })
      expect(http.code).toBe(Cli.NotFound)
    }))

  it.scopedLive(`unauthorized: ${Cli.Unauthorized}, and the secret is never printed`, () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make({ authorization: "Bearer right-token" })
      server.put("/m.onnx", model)
      const dir = yield* tempDir
      const run = yield* fetchWith("http", {
        urls: server.url("/m.onnx"),
        cache_dir: dir,
        headers: { Authorization: "Bearer wrong-token" }
      })
      expect(run.code).toBe(Cli.Unauthorized)
      expect(run.stderr).toContain("Check the credentials")
      expect(run.stdout + run.stderr).not.toContain("wrong-token")
    }))

  it.scopedLive(`network failure after the retries: ${Cli.NetworkFailure}`, () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      server.fault("/m.onnx", { kind: "status", status: 503 }, { kind: "status", status: 503 })
      const dir = yield* tempDir
      const run = yield* fetchWith("http", { urls: server.url("/m.onnx"), cache_dir: dir, retries: 1 }, "--json")
      expect(run.code).toBe(Cli.NetworkFailure)
      expect(JSON.parse(run.stdout).errors[0]).toMatchObject({ tag: "TransientFailure" })
      expect(server.requests("/m.onnx")).toHaveLength(2)
    }))

  it.scopedLive(`integrity failure: ${Cli.IntegrityFailure}, and the bad file is not kept`, () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      const dir = yield* tempDir
      const run = yield* fetchWith(
        "http",
        { urls: server.url("/m.onnx"), cache_dir: path.join(dir, "cache"), sha256: "0".repeat(64) },
        "--to",
        path.join(dir, "out")
      )
      expect(run.code).toBe(Cli.IntegrityFailure)
      expect(run.stderr).toContain("checksum")
      expect(listAll(path.join(dir, "out"))).toEqual([])
      expect(listAll(path.join(dir, "cache")).filter((file) => file.endsWith(".partial") || file.endsWith("m.onnx"))).toEqual([])
    }))

  it.scopedLive(`fetch --unpack: a model.tar.gz over HTTP into --to as its files; a hostile archive is ${Cli.IntegrityFailure}`, () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/model.tar.gz", yield* archiveOf("tar.gz", { "model/model.onnx": model, "model/config.json": "{}" }))
      const dir = yield* tempDir
      const to = path.join(dir, "out")
      const run = yield* fetchWith("http", { urls: server.url("/model.tar.gz"), cache_dir: path.join(dir, "cache") }, "--unpack", "auto", "--to", to, "--json")
      expect(run.code, run.stderr).toBe(0)
      expect(JSON.parse(run.stdout).files.map((file: { readonly name: string }) => file.name)).toEqual(["model/config.json", "model/model.onnx"])
      expect(listAll(to)).toEqual(["model", "model/config.json", "model/model.onnx"])
      expect(sha256(fs.readFileSync(path.join(to, "model", "model.onnx")))).toBe(sha256(model))
      execFileSync("python3", ["-c", String.raw`
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w:gz") as tar:
    info = tarfile.TarInfo("/etc/mlup-evil"); info.size = 1; tar.addfile(info, io.BytesIO(b"x"))
`, path.join(dir, "evil.tgz")])
      server.put("/evil.tgz", fs.readFileSync(path.join(dir, "evil.tgz")))
      const evil = yield* fetchWith("http", { urls: server.url("/evil.tgz"), cache_dir: path.join(dir, "cache") }, "--unpack", "auto", "--to", path.join(dir, "evil"))
      expect(evil.code).toBe(Cli.IntegrityFailure)
      expect(evil.stderr).toContain("Refused to unpack")
      expect(evil.stderr).toContain("/etc/mlup-evil")
      expect(listAll(path.join(dir, "evil"))).toEqual([])
    }))

  it.scopedLive("fetch oci://: an artifact from a registry into --to; its password from the environment's Docker config, never printed", () =>
    Effect.gen(function*() {
      const registry = yield* Registry.make({ auth: { kind: "basic", username: "ci", password: "registry-s3cret" } })
      yield* Effect.promise(() => registry.pushArtifact("models/iris", "v2", { "model.onnx": model, "config.json": "{}" }))
      const dir = yield* tempDir
      fs.writeFileSync(
        path.join(dir, "config.json"),
        JSON.stringify({ auths: { [registry.host]: { auth: Buffer.from("ci:registry-s3cret").toString("base64") } } })
      )
      const to = path.join(dir, "out")
      const uri = `oci://${registry.host}/models/iris:v2`
      const kwargs = JSON.stringify({ insecure: true, cache_dir: path.join(dir, "cache") })
      const run = yield* cli(["fetch", uri, "-k", kwargs, "--to", to, "--json"], { DOCKER_CONFIG: dir })
      expect(run.code, run.stderr).toBe(0)
      expect(JSON.parse(run.stdout)).toMatchObject({ ok: true, storageType: "oci" })
      expect(listAll(to)).toEqual(["config.json", "model.onnx"])
      expect(sha256(fs.readFileSync(path.join(to, "model.onnx")))).toBe(sha256(model))
      const refused = yield* cli(["fetch", uri, "-k", kwargs, "--to", path.join(dir, "no")], { DOCKER_CONFIG: path.join(dir, "none") })
      expect(refused.code).toBe(Cli.Unauthorized)
      expect(refused.stderr + run.stderr + run.stdout).not.toContain("registry-s3cret")
    }))

  it.scopedLive(`write failure: ${Cli.WriteFailed} (--to under a file)`, () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "m.pckl": "m", "blocker": "a file" })
      const blocked = path.join(dir, "blocker", "out")
      const run = yield* fetchWith("disk", { path_to_files: path.join(dir, "m.pckl") }, "--to", blocked)
      expect(run.code).toBe(Cli.WriteFailed)
      expect(run.stderr).toContain(blocked)
    }))

  for (const [signal, code] of [["SIGINT", Cli.Interrupted], ["SIGTERM", Cli.Terminated]] as const) {
    it.scopedLive(`${signal} during a download: ${code}, nothing in the target, the partial kept in the cache and resumed`, () =>
      Effect.gen(function*() {
        // Large enough to be resumed (8 MiB or more).
        const large = bytesOf(10 * 1024 * 1024, 6)
        const server = yield* TestServer.make({ chunkSize: 64 * 1024, delayMs: 10 })
        server.put("/m.onnx", large)
        const dir = yield* tempDir
        const cache = path.join(dir, "cache")
        const to = path.join(dir, "out")
        const args = ["fetch", "-t", "http", "-k", JSON.stringify({ urls: server.url("/m.onnx"), cache_dir: cache }), "--to", to]
        const running = start(args)
        // Wait until a checkpoint is recorded (bytes flushed, every quarter of the file here).
        yield* untilCheckpointed(cache, (parts) => (parts["0"] ?? 0) > 0)
        running.child.kill(signal)
        const run = yield* Effect.promise(() => running.done)
        expect(run.code).toBe(code)
        expect(run.stderr).toContain("interrupted")
        // Nothing under a final name, no lock: only the partial file and its resume record.
        const files = listAll(cache).filter((file) => !fs.statSync(path.join(cache, file)).isDirectory())
        const key = cacheKeyOf(server.url("/m.onnx"))
        expect(files.map((file) => path.basename(file)).sort()).toEqual([`${key}.json`, `${key}.part`])
        expect(listAll(to)).toEqual([])
        const kept = checkpointed(cache)["0"]

        // The next run resumes from there.
        const again = yield* cli([...args, "--hash", "--json"])
        expect(again.code).toBe(0)
        expect(JSON.parse(again.stdout).files).toMatchObject([{ name: "m.onnx", sha256: sha256(large) }])
        expect(server.requests("/m.onnx").at(-1)).toMatchObject({
          status: 206,
          range: `bytes=${kept}-${large.byteLength - 1}`
        })
      }))
  }
})

describe("mlup-storage on a terminal", () => {
  it.scopedLive("draws progress bars that finish at 100% (run under a pseudo-terminal with script(1))", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make({ chunkSize: 128 * 1024, delayMs: 15 })
      server.put("/m.onnx", model)
      server.put("/w.bin", bytesOf(512 * 1024, 5))
      const dir = yield* tempDir
      const kwargs = JSON.stringify({ urls: [server.url("/m.onnx"), server.url("/w.bin")], cache_dir: dir })
      const quoted = [process.execPath, bin, "fetch", "-t", "http", "-k", kwargs].map((arg) => `'${arg.replaceAll("'", "'\\''")}'`)
      // The pseudo-terminal is 120 columns wide, as a terminal window would be.
      const command = `stty cols 120 rows 40; ${quoted.join(" ")}`
      const output = yield* Effect.promise(() =>
        new Promise<{ code: number | null; text: string }>((resolve) => {
          const child = spawn("script", ["-q", "-e", "-c", command, "/dev/null"], {
            env: cleanEnv({ TERM: "xterm" }),
            stdio: ["ignore", "pipe", "pipe"]
          })
          let text = ""
          child.stdout.on("data", (chunk: Buffer) => (text += chunk.toString()))
          child.stderr.on("data", (chunk: Buffer) => (text += chunk.toString()))
          child.on("close", (code) => resolve({ code, text }))
        })
      )
      expect(output.code).toBe(0)
      // Redrawn in place: the cursor moves up over the previous bars.
      expect(output.text).toMatch(/\x1b\[\d+F/)
      // A bar part way, and the overall bar finished.
      expect(output.text).toMatch(/m\.onnx\s+\[#*-+\]\s+\d+% [\d.]+ (KiB|MiB)\/2\.00 MiB [\d.]+ MiB\/s/)
      expect(output.text).toMatch(/total \(2\/2 files\)\s+\[#{24}\] 100%/)
      expect(output.text).toMatch(/fetched {2}m\.onnx \(2\.00 MiB\)/)
      // The table follows on stdout (the same terminal here).
      expect(output.text).toMatch(/name\s+size\s+path/)
    }))
})

describe("mlup-storage: the target folder never lies", () => {
  it.scopedLive("two URLs with one file name: invalid configuration naming both, nothing placed", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/a/model.bin", new TextEncoder().encode("a"))
      server.put("/b/model.bin", new TextEncoder().encode("b"))
      const dir = yield* tempDir
      const to = path.join(dir, "out")
      const run = yield* fetchWith(
        "http",
        { urls: [server.url("/a/model.bin"), server.url("/b/model.bin")], cache_dir: path.join(dir, "cache") },
        "--to",
        to,
        "--json"
      )
      expect(run.code).toBe(Cli.InvalidConfiguration)
      expect(run.stderr).toContain(server.url("/a/model.bin"))
      expect(run.stderr).toContain(server.url("/b/model.bin"))
      expect(JSON.parse(run.stdout).errors[0].issues[0]).toMatchObject({ field: "urls" })
      expect(fs.existsSync(to)).toBe(false)
      expect(server.log).toEqual([])
    }))

  // Nested names come from S3 keys (m/a.bin, m/sub/x.bin).
  const s3Models = (files: Record<string, string>) =>
    Effect.gen(function*() {
      const server = yield* S3.make(["models"])
      for (const [key, content] of Object.entries(files)) {
        yield* Effect.promise(() => server.put("models", key, new TextEncoder().encode(content)))
      }
      const dir = yield* tempDir
      return {
        dir,
        kwargs: {
          bucket: "models",
          path_to_files: "m/",
          file_mask: "bin",
          endpoint: server.endpoint,
          access_key_id: S3.accessKeyId,
          secret_access_key: S3.secretAccessKey,
          cache_dir: path.join(dir, "cache")
        }
      }
    })

  it.scopedLive("a later move that fails undoes the earlier ones: the target is as it was", () =>
    Effect.gen(function*() {
      const { dir, kwargs } = yield* s3Models({ "m/a.bin": "new a", "m/sub/x.bin": "new x" })
      const to = path.join(dir, "out")
      // a.bin (an older version) is there; "sub" is a file, so sub/x.bin cannot be placed.
      writeFiles(to, { "a.bin": "old a", sub: "not a folder" })
      const run = yield* fetchWith("s3", kwargs, "--to", to)
      expect(run.code).toBe(Cli.WriteFailed)
      expect(fs.readFileSync(path.join(to, "a.bin"), "utf8")).toBe("old a")
      expect(fs.readFileSync(path.join(to, "sub"), "utf8")).toBe("not a folder")
      expect(listAll(to).sort()).toEqual(["a.bin", "sub"])
      expect(run.stderr).not.toContain("cache_dir")
      // Once the obstacle is gone, both arrive.
      fs.rmSync(path.join(to, "sub"))
      expect((yield* fetchWith("s3", kwargs, "--to", to)).code).toBe(0)
      expect(fs.readFileSync(path.join(to, "a.bin"), "utf8")).toBe("new a")
      expect(fs.readFileSync(path.join(to, "sub", "x.bin"), "utf8")).toBe("new x")
    }))

  it.scopedLive("a folder of the user's where a file goes is never removed: a write failure naming it, nothing changed", () =>
    Effect.gen(function*() {
      const { dir, kwargs } = yield* s3Models({ "m/a.bin": "new a", "m/model.bin": "model" })
      const to = path.join(dir, "out")
      writeFiles(to, { "a.bin": "old a", "model.bin/weights.pt": "the user's", "model.bin/sub/notes": "keep" })
      const before = listAll(to).sort()
      const run = yield* fetchWith("s3", kwargs, "--to", to, "--json")
      expect(run.code).toBe(Cli.WriteFailed)
      expect(run.stderr).toContain(path.join(to, "model.bin"))
      expect(run.stderr).toContain("is a folder")
      expect(JSON.parse(run.stdout)).toMatchObject({ ok: false, exitCode: Cli.WriteFailed })
      expect(listAll(to).sort()).toEqual(before)
      expect(fs.readFileSync(path.join(to, "model.bin", "weights.pt"), "utf8")).toBe("the user's")
      expect(fs.readFileSync(path.join(to, "a.bin"), "utf8")).toBe("old a")
      // An empty folder is the user's too.
      fs.rmSync(path.join(to, "model.bin"), { recursive: true })
      fs.mkdirSync(path.join(to, "model.bin"))
      expect((yield* fetchWith("s3", kwargs, "--to", to)).code).toBe(Cli.WriteFailed)
      expect(fs.statSync(path.join(to, "model.bin")).isDirectory()).toBe(true)
    }))

  it.scopedLive("--to with an empty value (an unset shell variable) is refused; nothing is written", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "m.pckl": "m" })
      const cwd = yield* tempDir
      for (const to of ["", "  "]) {
        const args = ["fetch", "-t", "disk", "-k", JSON.stringify({ path_to_files: path.join(dir, "m.pckl") }), "--to", to]
        const run = yield* Effect.promise(() => start(args, {}, cwd).done)
        expect(run.code).toBe(Cli.InvalidConfiguration)
        expect(run.stderr).toContain("--to: is empty")
        expect(fs.readdirSync(cwd)).toEqual([])
      }
    }))

  it.scopedLive("a symbolic link inside the target is never followed out of it", () =>
    Effect.gen(function*() {
      const { dir, kwargs } = yield* s3Models({ "m/sub/x.bin": "x" })
      const outside = path.join(dir, "outside")
      fs.mkdirSync(outside)
      const to = path.join(dir, "out")
      fs.mkdirSync(to)
      fs.symlinkSync(outside, path.join(to, "sub"))
      const run = yield* fetchWith("s3", kwargs, "--to", to)
      expect(run.code).toBe(Cli.WriteFailed)
      expect(run.stderr).toContain("symbolic link")
      expect(fs.readdirSync(outside)).toEqual([])
    }))

  it.scopedLive("--to hard-links from the cache (one copy on disk); --no-cache leaves no cache behind", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      const dir = yield* tempDir
      const cache = path.join(dir, "cache")
      const to = path.join(dir, "out")
      const linked = yield* fetchWith("http", { urls: server.url("/m.onnx"), cache_dir: cache }, "--to", to)
      expect(linked.code).toBe(0)
      const cached = path.join(cache, listAll(cache).find((file) => file.endsWith("m.onnx"))!)
      expect(fs.statSync(path.join(to, "m.onnx")).ino).toBe(fs.statSync(cached).ino)
      // The link changed the cached file's ctime: the next run re-hashes it once, finds it intact, and uses it.
      const again = yield* fetchWith("http", { urls: server.url("/m.onnx"), cache_dir: cache }, "--to", to, "--hash", "--json")
      expect(again.code).toBe(0)
      expect(JSON.parse(again.stdout).files[0].sha256).toBe(sha256(model))

      const defaultCache = path.join(dir, "default-cache")
      const bare = path.join(dir, "bare")
      const run = yield* cli(
        ["fetch", "-t", "http", "-k", JSON.stringify({ urls: server.url("/m.onnx") }), "--to", bare, "--no-cache"],
        { MLUP_STORAGE_CACHE: defaultCache }
      )
      expect(run.code).toBe(0)
      expect(listAll(bare)).toEqual(["m.onnx"])
      expect(sha256(fs.readFileSync(path.join(bare, "m.onnx")))).toBe(sha256(model))
      expect(fs.existsSync(defaultCache)).toBe(false)
      const withoutTo = yield* fetchWith("http", { urls: server.url("/m.onnx") }, "--no-cache")
      expect(withoutTo.code).toBe(Cli.InvalidConfiguration)
    }))

  it.scopedLive("--verify re-hashes every cached file before use; a tampered one is fetched again", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      const dir = yield* tempDir
      const kwargs = { urls: server.url("/m.onnx"), cache_dir: path.join(dir, "cache") }
      expect((yield* fetchWith("http", kwargs)).code).toBe(0)
      const cached = path.join(dir, "cache", listAll(path.join(dir, "cache")).find((file) => file.endsWith("m.onnx"))!)
      const bytes = fs.readFileSync(cached)
      bytes[10] = bytes[10]! ^ 0xff
      fs.writeFileSync(cached, bytes)
      const run = yield* fetchWith("http", kwargs, "--verify", "--hash", "--json")
      expect(run.code).toBe(0)
      expect(JSON.parse(run.stdout).files[0].sha256).toBe(sha256(model))
      expect(server.requests("/m.onnx").map((r) => r.status)).toEqual([200, 200])
    }))

  it.scopedLive("files are flushed before their rename and folders after (strace)", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      const dir = yield* tempDir
      const trace = path.join(dir, "trace")
      const kwargs = JSON.stringify({ urls: server.url("/m.onnx"), cache_dir: path.join(dir, "cache") })
      // Asynchronously: the server answers from this very process.
      const code = yield* Effect.promise(() =>
        new Promise<number | null>((resolve) =>
          spawn("strace", [
            "-f", "-qq", "-o", trace, "-e", "trace=openat,fsync,fdatasync,rename,renameat,renameat2",
            process.execPath, bin, "fetch", "-t", "http", "-k", kwargs, "--to", path.join(dir, "out"), "-q"
          ], { env: cleanEnv(), stdio: "ignore" }).on("exit", resolve)
        )
      )
      expect(code).toBe(0)
      const calls = fs.readFileSync(trace, "utf8").split("\n")
      const fdOf = new Map<string, string>()
      const order: Array<string> = []
      for (const line of calls) {
        const open = /openat\(AT_FDCWD, "([^"]+)".*\) = (\d+)$/.exec(line)
        if (open !== null) fdOf.set(open[2]!, open[1]!)
        const sync = /\bf(?:data)?sync\((\d+)\)/.exec(line)
        if (sync !== null) order.push(`sync ${fdOf.get(sync[1]!)}`)
        const rename = /rename(?:at2?)?\((?:AT_FDCWD, )?"([^"]+)", (?:AT_FDCWD, )?"([^"]+)"/.exec(line)
        if (rename !== null) order.push(`rename ${rename[1]} -> ${rename[2]}`)
      }
      const into = order.findIndex((step) => /^rename .*m\.onnx\.partial -> .*\/m\.onnx$/.test(step))
      expect(into).toBeGreaterThan(0)
      const partial = order[into]!.split(" ")[1]
      const file = order[into]!.split(" -> ")[1]!
      expect(order.slice(0, into)).toContain(`sync ${partial}`)
      expect(order.slice(into)).toContain(`sync ${path.dirname(file)}`)
      // And the file placed in the target: flushed in staging before the switch, the folder after.
      const placed = order.findIndex((step) => step.startsWith("rename ") && step.endsWith(`${path.join(dir, "out", "m.onnx")}`))
      expect(placed).toBeGreaterThan(into)
      expect(order.slice(into, placed).some((step) => /^sync .*\.mlup-storage-staging-.*m\.onnx$/.test(step))).toBe(true)
      expect(order.slice(placed)).toContain(`sync ${path.join(dir, "out")}`)
    }))
})

describe("mlup-storage: secrets never shown", () => {
  it.scopedLive("a YAML syntax error names line and column, never the text around it", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, {
        "mlup.yaml": "ml:\n  storage_type: s3\n  storage_kwargs:\n    secret_access_key: hunter2-secret\n    bucket: [models\n"
      })
      for (const json of [[], ["--json"]]) {
        const run = yield* cli(["fetch", "--config", path.join(dir, "mlup.yaml"), ...json])
        expect(run.code).toBe(Cli.InvalidConfiguration)
        expect(run.stderr + run.stdout).toMatch(/line \d+, column \d+/)
        expect(run.stderr + run.stdout).not.toContain("hunter2")
      }
      const kwargs = yield* cli(["fetch", "-t", "s3", "-k", "{\"secret_access_key\": \"hunter2-secret\", bucket}"])
      expect(kwargs.code).toBe(Cli.InvalidConfiguration)
      expect(kwargs.stderr).toContain("line 1, column")
      expect(kwargs.stderr).not.toContain("hunter2")
    }))

  it.scopedLive("credentials and signatures in URLs are redacted on stderr, in logs and in --json", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      const url = server.url("/gone.onnx").replace("http://", "http://admin:hunter2@") +
        "?X-Amz-Signature=s3cr3t&X-Amz-Credential=AKIAEXAMPLE&X-Amz-Security-Token=t0k3n"
      server.fault("/gone.onnx", { kind: "status", status: 503 })
      const run = yield* cli(["--log-level", "debug", "fetch", "-t", "http", "-k", JSON.stringify({ urls: url }), "--json"], {
        MLUP_STORAGE_CACHE: path.join(yield* tempDir, "cache")
      })
      expect(run.code).toBe(Cli.NotFound)
      expect(run.stderr).toContain("retrying")
      expect(run.stderr + run.stdout).toContain("REDACTED")
      expect(run.stderr + run.stdout).not.toMatch(/hunter2|s3cr3t|AKIAEXAMPLE|t0k3n/)
    }))

  it.scopedLive("the resume hint appears only where a partial download can resume", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      const cache = path.join(yield* tempDir, "cache")
      server.fault("/m.onnx", { kind: "status", status: 400 })
      const rejected = yield* fetchWith("http", { urls: server.url("/m.onnx"), cache_dir: cache, retries: 0 })
      expect(rejected.code).toBe(Cli.NetworkFailure)
      expect(rejected.stderr).not.toContain("resume")
      server.fault("/m.onnx", { kind: "drop", after: 1024 * 1024 })
      const dropped = yield* fetchWith("http", { urls: server.url("/m.onnx"), cache_dir: cache, retries: 0 })
      expect(dropped.code).toBe(Cli.NetworkFailure)
      expect(dropped.stderr).toContain("the next run resumes it")
      // With --no-cache nothing is kept: no promise of a resume.
      const to = path.join(yield* tempDir, "out")
      server.fault("/m.onnx", { kind: "drop", after: 1024 * 1024 })
      const uncached = yield* cli([
        "fetch", "-t", "http", "-k", JSON.stringify({ urls: server.url("/m.onnx"), retries: 0 }), "--to", to, "--no-cache"
      ])
      expect(uncached.code).toBe(Cli.NetworkFailure)
      expect(uncached.stderr).not.toContain("resume")
      expect(uncached.stderr).toContain("the next run starts over")
      // A proxy password with a stray "%": invalid configuration, as JSON with --json, the password never shown.
      const proxied = yield* cli(
        ["fetch", "-t", "http", "-k", JSON.stringify({ urls: server.url("/m.onnx"), cache_dir: cache }), "--json"],
        { HTTP_PROXY: "http://corp:50%off@127.0.0.1:9" }
      )
      expect(proxied.code).toBe(Cli.InvalidConfiguration)
      expect(JSON.parse(proxied.stdout)).toMatchObject({ ok: false, errors: [{ issues: [{ field: "HTTP_PROXY" }] }] })
      expect(proxied.stderr + proxied.stdout).not.toContain("50%off")
      // Credentials in a store's URI: refused, never quoted.
      const inUri = yield* cli(["fetch", "gs://HMACKEY:pa55word@models/iris", "--json"])
      expect(inUri.code).toBe(Cli.InvalidConfiguration)
      expect(inUri.stderr + inUri.stdout).not.toMatch(/pa55word|HMACKEY/)
    }))
})

describe("mlup-storage: sources as URIs", () => {
  it.scopedLive("fetch s3://bucket/prefix/, https://…, file:///…, and STORAGE_URI", () =>
    Effect.gen(function*() {
      const s3 = yield* S3.make(["models"])
      yield* Effect.promise(() => s3.put("models", "iris/v1/model.onnx", model))
      const dir = yield* tempDir
      const s3Kwargs = JSON.stringify({
        file_mask: "onnx$",
        endpoint: s3.endpoint,
        access_key_id: S3.accessKeyId,
        secret_access_key: S3.secretAccessKey,
        cache_dir: path.join(dir, "cache")
      })
      const fromS3 = yield* cli(["fetch", "s3://models/iris/v1/", "-k", s3Kwargs, "--to", path.join(dir, "s3"), "--hash", "--json"])
      expect(fromS3.code).toBe(0)
      expect(JSON.parse(fromS3.stdout)).toMatchObject({ storageType: "s3", files: [{ name: "model.onnx", sha256: sha256(model) }] })
      // Without a mask, a URI delivers every file under it (mlup's .pckl default is for mlup's keys).
      yield* Effect.promise(() => s3.put("models", "iris/v1/labels.json", "[]"))
      const { file_mask: _mask, ...noMask } = JSON.parse(s3Kwargs) as Record<string, unknown>
      const everything = yield* cli(["fetch", "s3://models/iris/v1/", "-k", JSON.stringify(noMask), "--json"])
      expect(everything.code).toBe(0)
      expect(JSON.parse(everything.stdout).files.map((file: { name: string }) => file.name)).toEqual(["labels.json", "model.onnx"])

      const server = yield* TestServer.make()
      server.put("/m/model.onnx", model)
      const fromHttp = yield* cli(["fetch", server.url("/m/model.onnx"), "--json"], { MLUP_STORAGE_CACHE: path.join(dir, "cache") })
      expect(fromHttp.code).toBe(0)
      expect(JSON.parse(fromHttp.stdout)).toMatchObject({ storageType: "http", files: [{ name: "model.onnx" }] })

      writeFiles(dir, { "local/iris.pckl": "weights" })
      const fromFile = yield* cli(["fetch", `file://${path.join(dir, "local")}`, "--json"])
      expect(fromFile.code).toBe(0)
      expect(JSON.parse(fromFile.stdout)).toMatchObject({ storageType: "disk", files: [{ name: "iris.pckl" }] })

      const fromEnv = yield* cli(["fetch", "--json"], {
        STORAGE_URI: server.url("/m/model.onnx"),
        MLUP_STORAGE_CACHE: path.join(dir, "cache")
      })
      expect(fromEnv.code).toBe(0)
      expect(JSON.parse(fromEnv.stdout)).toMatchObject({ storageType: "http", files: [{ name: "model.onnx" }] })

      // A URI where a key prefix goes is refused, not mangled into s3://models/s3://models/iris/.
      const mangled = yield* fetchWith("s3", { bucket: "models", prefix: "s3://models/iris/" })
      expect(mangled.code).toBe(Cli.InvalidConfiguration)
      expect(mangled.stderr).toContain("storage_uri")
      const unknown = yield* cli(["check", "ftp://host/model.onnx"])
      expect(unknown.code).toBe(Cli.InvalidConfiguration)
    }))
})

describe("mlup-storage: the new sources by URI", () => {
  it.scopedLive("fetch hf://org/name@revision/path, az://container/prefix, gs://bucket/prefix", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const cacheDir = path.join(dir, "cache")

      const hub = yield* Hub.make()
      const commit = hub.push("acme/iris", { "onnx/model.onnx": model, "config.json": "{}", "README.md": "#" }, { visibility: "private" })
      hub.tag("acme/iris", "v1", commit)
      hub.grant("acme/iris", "hf_cli_token")
      const fromHub = yield* cli(
        ["fetch", "hf://acme/iris@v1/onnx", "-k", JSON.stringify({ endpoint: hub.endpoint, cache_dir: cacheDir }), "--to", path.join(dir, "hf"), "--hash", "--json"],
        { HF_TOKEN: "hf_cli_token" }
      )
      expect(fromHub.code).toBe(0)
      expect(JSON.parse(fromHub.stdout)).toMatchObject({ storageType: "hf", files: [{ name: "model.onnx", sha256: sha256(model) }] })
      expect(fingerprint(fs.readFileSync(path.join(dir, "hf", "model.onnx")))).toBe(fingerprint(model))
      // --no-cache (an init container's choice) holds for the new sources too: nothing left in a cache.
      const noCache = yield* cli(
        ["fetch", "hf://acme/iris@v1/onnx", "-k", JSON.stringify({ endpoint: hub.endpoint }), "--to", path.join(dir, "hf-once"), "--no-cache"],
        { HF_TOKEN: "hf_cli_token", MLUP_STORAGE_CACHE: path.join(dir, "never") }
      )
      expect(noCache.code).toBe(0)
      expect(fs.readdirSync(path.join(dir, "hf-once"))).toEqual(["model.onnx"])
      expect(fs.existsSync(path.join(dir, "never"))).toBe(false)
      // Without the token: Unauthorized (exit 4), with the hint, the token never printed.
      const denied = yield* cli(["fetch", "hf://acme/iris@v1", "-k", JSON.stringify({ endpoint: hub.endpoint, cache_dir: cacheDir, retries: 0 })])
      expect(denied.code).toBe(Cli.Unauthorized)
      expect(denied.stderr).toContain("HF_TOKEN")

      const azurite = yield* Azurite.make()
      yield* Effect.promise(() => azurite.createContainer("models"))
      yield* Effect.promise(() => azurite.put("models", "iris/v1/model.onnx", model))
      const fromAzure = yield* cli(
        ["fetch", "az://models/iris/v1/", "-k", JSON.stringify({ file_mask: "onnx$", cache_dir: cacheDir }), "--hash", "--json"],
        { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString }
      )
      expect(fromAzure.code).toBe(0)
      expect(JSON.parse(fromAzure.stdout)).toMatchObject({ storageType: "azure", files: [{ name: "model.onnx", sha256: sha256(model) }] })
      expect(fromAzure.stdout + fromAzure.stderr).not.toContain(Azurite.accountKey)

      const s3 = yield* S3.make(["models"])
      yield* Effect.promise(() => s3.put("models", "iris/v1/model.onnx", model))
      const fromGcs = yield* cli(
        ["fetch", "gs://models/iris/v1/", "-k", JSON.stringify({ file_mask: "onnx$", endpoint: s3.endpoint, cache_dir: cacheDir }), "--hash", "--json"],
        { GCS_ACCESS_KEY_ID: S3.accessKeyId, GCS_SECRET_ACCESS_KEY: S3.secretAccessKey }
      )
      expect(fromGcs.code).toBe(0)
      expect(JSON.parse(fromGcs.stdout)).toMatchObject({ storageType: "gcs", files: [{ name: "model.onnx", sha256: sha256(model) }] })
    }), 120_000)
})

describe("mlup-storage: AWS conventions", () => {
  it.scopedLive("S3 without any credentials: Unauthorized (exit 4) at once, not retried as a network failure", () =>
    Effect.gen(function*() {
      const server = yield* S3.make(["models"])
      const started = Date.now()
      const run = yield* cli(["fetch", "s3://models/m/", "-k", JSON.stringify({ endpoint: server.endpoint, retries: 5 })])
      expect(run.code).toBe(Cli.Unauthorized)
      expect(run.stderr).toContain("no credentials")
      expect(run.stderr).not.toContain("retrying")
      expect(Date.now() - started).toBeLessThan(5000)
      expect(server.log).toEqual([])
    }))

  it.scopedLive("the endpoint and region from the environment (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION), as KServe sets them", () =>
    Effect.gen(function*() {
      const server = yield* S3.make(["models"])
      yield* Effect.promise(() => server.put("models", "m/model.onnx", model))
      const run = yield* cli(["fetch", "s3://models/m/", "-k", JSON.stringify({ file_mask: "onnx$" }), "--json", "-q"], {
        AWS_ENDPOINT_URL: server.endpoint,
        AWS_DEFAULT_REGION: "eu-west-1",
        AWS_ACCESS_KEY_ID: S3.accessKeyId,
        AWS_SECRET_ACCESS_KEY: S3.secretAccessKey,
        MLUP_STORAGE_CACHE: path.join(yield* tempDir, "cache")
      })
      expect(run.code).toBe(0)
      expect(JSON.parse(run.stdout).files).toMatchObject([{ name: "model.onnx", size: model.byteLength }])
      expect(run.stderr).toBe("")
    }))
})

describe("mlup-storage: output for scripts and terminals", () => {
  it.scopedLive("-q prints only the delivered paths; --log-level works after the subcommand", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "models/a.pckl": "a", "models/b.pckl": "b" })
      const run = yield* cli(["fetch", "-t", "disk", "-k", JSON.stringify({ path_to_files: path.join(dir, "models") }), "-q"])
      expect(run.code).toBe(0)
      expect(run.stdout).toBe(`${path.join(dir, "models", "a.pckl")}\n${path.join(dir, "models", "b.pckl")}\n`)
      expect(run.stderr).toBe("")
      const late = yield* cli(["fetch", `file://${path.join(dir, "models")}`, "--log-level", "debug", "-q"])
      expect(late.code).toBe(0)
      expect(late.stdout.split("\n").filter((line) => line !== "")).toHaveLength(2)
    }))

  it.scopedLive("with --json, a usage error is JSON on stdout too", () =>
    Effect.gen(function*() {
      const run = yield* cli(["fetch", "--no-such-flag", "--json"])
      expect(run.code).toBe(Cli.InvalidConfiguration)
      expect(JSON.parse(run.stdout)).toMatchObject({ ok: false, exitCode: Cli.InvalidConfiguration, errors: [{ tag: "UsageError" }] })
    }))

  it.scopedLive("no ANSI codes when the output is not a terminal, or with NO_COLOR, --help included", () =>
    Effect.gen(function*() {
      for (const args of [["--help"], ["fetch", "--help"], ["fetch", "--no-such-flag"]]) {
        const run = yield* cli(args)
        expect(run.stdout + run.stderr).not.toContain("\u001b[")
      }
      // On a terminal (script(1) gives a pseudo-terminal), colours, unless NO_COLOR says otherwise.
      const onTty = (env: string) =>
        execFileSync("script", ["-qfec", `${env} ${process.execPath} ${bin} --help`, "/dev/null"], {
          encoding: "utf8",
          env: cleanEnv()
        })
      expect(onTty("")).toContain("\u001b[")
      expect(onTty("NO_COLOR=1")).not.toContain("\u001b[")
    }))

  it("the progress view fits the terminal's width, speed and time left included, and follows a resize", () =>
    Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const written: Array<string> = []
      const terminal = { isTTY: true, columns: 80, write: (text: string) => void written.push(text) }
      const progress = yield* Progress.make
      const view = yield* progressView.render(yield* progress.subscribe, terminal)
      const MiB = 1024 * 1024
      const event = (done: number): Progress.Event => ({
        location: "https://models.example/a/very/long/path/to/the-model-with-a-long-name.onnx",
        name: "the-model-with-a-long-name.onnx",
        done,
        total: 3000 * MiB,
        overallDone: done,
        overallTotal: 3000 * MiB,
        phase: "fetching"
      })
      yield* progress.publish(event(0))
      yield* Effect.sleep("500 millis")
      written.length = 0
      yield* progress.publish(event(1200 * MiB))
      yield* Effect.sleep("300 millis")
      const lines = () =>
        written.join("").split("\n").map((line) => line.replace(/\u001b\[\d*[A-Za-z]/g, "")).filter((line) => line.includes("MiB/s"))
      const at80 = lines()
      expect(at80.length).toBeGreaterThan(0)
      for (const line of at80) {
        expect(line.length).toBeLessThanOrEqual(79)
        expect(line).toMatch(/MiB\/s \d+(s|m\d+s|h\d+m) left$/)
      }
      written.length = 0
      terminal.columns = 60
      yield* progress.publish(event(1500 * MiB))
      yield* Effect.sleep("300 millis")
      for (const line of lines()) {
        expect(line.length).toBeLessThanOrEqual(59)
        expect(line).toMatch(/MiB\/s .* left$/)
      }
      yield* view.finish
    }))))
})

describe("mlup-storage fetch --watch: a folder kept in step with its source (a sidecar)", () => {
  // Polls `f` (real processes, real files) until it holds, or fails after `ms`.
  const until = (what: string, f: () => boolean, ms = 30_000) =>
    Effect.promise(async () => {
      for (const started = Date.now(); !f(); await new Promise((resolve) => setTimeout(resolve, 20))) {
        if (Date.now() - started > ms) throw new Error(`waited ${ms} ms for ${what}`)
      }
    })
  const read = (file: string) => (fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "")

  it.scopedLive("each version switched in whole, files it no longer has moved out, --exec after each; interrupted: the last version whole", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const source = path.join(dir, "source")
      const to = path.join(dir, "out")
      const hooks = path.join(dir, "hooks.txt")
      writeFiles(source, { "a.onnx": "a one", "b.onnx": "b one", "notes.md": "not selected" })
      // A file of the user's in the target: never touched.
      writeFiles(to, { "README.txt": "the user's" })
      const running = start([
        "fetch", "-t", "disk", "-k", JSON.stringify({ path_to_files: source, file_mask: "onnx$" }),
        "--to", to, "--watch", "--interval", "0.2", "--settle", "0.2", "--json",
        "--exec", `echo "$MLUP_STORAGE_VERSION $(cat "$MLUP_STORAGE_DIR/a.onnx")" >> ${JSON.stringify(hooks)}`
      ])
      let stdout = ""
      running.child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
      yield* until("version 1", () => read(hooks).includes("1 a one"))
      expect(listAll(to)).toEqual([".mlup-storage-placed.json", "README.txt", "a.onnx", "b.onnx"])

      // Version 2: a changed, b gone.
      fs.writeFileSync(path.join(source, "a.onnx"), "a two")
      fs.rmSync(path.join(source, "b.onnx"))
      yield* until("version 2", () => read(hooks).includes("2 a two"))
      expect(listAll(to)).toEqual([".mlup-storage-placed.json", "README.txt", "a.onnx"])
      expect(read(path.join(to, "README.txt"))).toBe("the user's")
      expect(JSON.parse(read(path.join(to, ".mlup-storage-placed.json")))).toEqual({ names: ["a.onnx"] })
      // The hook ran after the switch: it read the new file.
      expect(read(hooks)).toBe("1 a one\n2 a two\n")

      // A large version: interrupted while it is staged, the folder holds version 2 whole, no staging left.
      fs.writeFileSync(path.join(source, "a.onnx"), bytesOf(256 * 1024 * 1024, 9))
      yield* until("the large version staged", () => fs.readdirSync(to).some((name) => name.startsWith(".mlup-storage-staging-")), 60_000)
      running.child.kill("SIGTERM")
      const run = yield* Effect.promise(() => running.done)
      expect(run.code).toBe(Cli.Terminated)
      expect(run.stderr).toContain("the folder holds the last version placed")
      expect(listAll(to)).toEqual([".mlup-storage-placed.json", "README.txt", "a.onnx"])
      expect(read(path.join(to, "a.onnx"))).toBe("a two")
      // One JSON line per version.
      const lines = stdout.trim().split("\n").map((line) => JSON.parse(line))
      expect(lines.map((line) => [line.version, line.files.map((file: { name: string }) => file.name)])).toEqual([
        [1, ["a.onnx", "b.onnx"]],
        [2, ["a.onnx"]]
      ])
    }), 120_000)

  it.scopedLive("the folders a version's files leave empty go with them; a folder holding the user's file stays", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const source = path.join(dir, "source")
      const to = path.join(dir, "out")
      const archive = path.join(source, "model.tar")
      // Each version published at once (written aside, renamed in).
      const publish = (files: Record<string, string>) =>
        Effect.map(archiveOf("tar", files), (bytes) => {
          fs.mkdirSync(source, { recursive: true })
          fs.writeFileSync(`${archive}.new`, bytes)
          fs.renameSync(`${archive}.new`, archive)
        })
      yield* publish({ "a.onnx": "a", "sub/c.onnx": "c", "deep/er/d.onnx": "d", "shared/e.onnx": "e" })
      writeFiles(to, { "shared/notes.txt": "the user's" })
      const running = start([
        "fetch", "-t", "disk", "-k", JSON.stringify({ path_to_files: archive, file_mask: "onnx$", unpack: "auto", cache_dir: path.join(dir, "cache") }),
        "--to", to, "--watch", "--interval", "0.2", "--settle", "0.1", "--json"
      ])
      // A version's line is printed once it is placed (and its staging folder removed).
      let stdout = ""
      running.child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
      const placed = (version: number) => stdout.split("\n").some((line) => line.includes(`"version":${version},`))
      yield* until("version 1", () => placed(1))
      expect(listAll(to)).toEqual([
        ".mlup-storage-placed.json", "a.onnx", "deep", "deep/er", "deep/er/d.onnx", "shared", "shared/e.onnx", "shared/notes.txt", "sub", "sub/c.onnx"
      ])
      yield* publish({ "a.onnx": "a two" })
      yield* until("version 2", () => placed(2))
      expect(read(path.join(to, "a.onnx"))).toBe("a two")
      expect(listAll(to)).toEqual([".mlup-storage-placed.json", "a.onnx", "shared", "shared/notes.txt"])
      expect(read(path.join(to, "shared", "notes.txt"))).toBe("the user's")
      running.child.kill("SIGTERM")
      expect((yield* Effect.promise(() => running.done)).code).toBe(Cli.Terminated)
    }), 60_000)

  it.scopedLive("a restarted sidecar knows what the last run placed; --exec that fails is reported and watching goes on; flags that need --watch", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const source = path.join(dir, "source")
      const to = path.join(dir, "out")
      writeFiles(source, { "a.onnx": "a", "b.onnx": "b" })
      const args = (...extra: ReadonlyArray<string>) => [
        "fetch", "-t", "disk", "-k", JSON.stringify({ path_to_files: source, file_mask: "onnx$" }),
        "--to", to, "--watch", "--interval", "0.2", "--settle", "0.1", ...extra
      ]
      const first = start(args())
      yield* until("version 1", () => listAll(to).includes("b.onnx"))
      first.child.kill("SIGINT")
      expect((yield* Effect.promise(() => first.done)).code).toBe(Cli.Interrupted)
      // Changed while no sidecar ran: the next one moves b out, as it knows it placed it.
      fs.rmSync(path.join(source, "b.onnx"))
      const second = start(args("--exec", "exit 3"))
      yield* until("b moved out", () => !listAll(to).includes("b.onnx"))
      yield* until("the failed hook reported", () => second.stderr().includes("--exec exited with 3"))
      fs.writeFileSync(path.join(source, "a.onnx"), "a again")
      yield* until("the next version", () => read(path.join(to, "a.onnx")) === "a again")
      second.child.kill("SIGTERM")
      expect((yield* Effect.promise(() => second.done)).code).toBe(Cli.Terminated)

      for (const [flags, reason] of [
        [["--watch"], "--watch: needs --to"],
        [["--to", to, "--exec", "true"], "--exec: needs --watch"],
        [["--to", to, "--watch", "--interval", "soon"], "--interval: is not a duration"]
      ] as const) {
        const run = yield* fetchWith("disk", { path_to_files: source }, ...flags)
        expect(run.code).toBe(Cli.InvalidConfiguration)
        expect(run.stderr.replace(/\s+/g, " ")).toContain(reason)
      }
    }), 60_000)
})
