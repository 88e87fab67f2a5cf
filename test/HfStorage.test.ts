import { expect, layer } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as child from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as HfStorage from "../src/HfStorage.js"
import * as hub from "../src/internal/hub.js"
import * as Storage from "../src/Storage.js"
import * as StorageUri from "../src/StorageUri.js"
import { storageContract } from "../src/Testing.js"
import { budgetAfterFailure, intoMemoryInParts, bytesOf, contents, filesUnder, fingerprint, checkpointed, partsRecords, platform, runSelectionChild, tempDir, untilCheckpointed } from "./helpers.js"
import * as Hub from "./servers/hub.js"
import { followsItsSource } from "./watching.js"

const quiet = Logger.minimumLogLevel(LogLevel.Error)
const env = Layer.merge(platform, quiet)
const withServer = layer(env, { excludeTestServices: true })
const MiB = 1024 * 1024

const onnx = bytesOf(200_000, 21)
const config = JSON.stringify({ architectures: ["IrisClassifier"], hidden_size: 4 })
const files = { "model.onnx": onnx, "config.json": config, "README.md": "# iris\n", ".gitattributes": "*.onnx filter=lfs\n" }

// No HF_* variable of the machine's may reach a test: each test says its own.
const withEnv = (vars: Record<string, string> = {}) =>
  Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries({ HF_TOKEN_PATH: "/nonexistent", ...vars }))))

const fixture = (needLoadFile: boolean, cache = true) =>
  Effect.gen(function*() {
    const server = yield* Hub.make()
    server.push("acme/iris", files)
    return {
      layer: Storage.layerFromSelection({
        storage_type: "hf",
        storage_kwargs: {
          storage_uri: "hf://acme/iris",
          allow_patterns: ["*.onnx", "*.json"],
          endpoint: server.endpoint,
          cache_dir: yield* tempDir,
          need_load_file: needLoadFile,
          cache
        }
      }).pipe(Layer.provide(env), Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map([["HF_TOKEN_PATH", "/nonexistent"]]))))),
      expected: [
        { _tag: needLoadFile ? "Bytes" as const : "Path" as const, name: "config.json", content: new TextEncoder().encode(config) },
        { _tag: needLoadFile ? "Bytes" as const : "Path" as const, name: "model.onnx", content: onnx }
      ]
    }
  })

storageContract("HfStorage (paths)", fixture(false))
storageContract("HfStorage (bytes)", fixture(true))
storageContract("HfStorage (straight into memory, cache: false)", fixture(true, false))

withServer("HfStorage: resume after SIGKILL", (it) => {
  const load = (options: HfStorage.Options) => Effect.flatMap(HfStorage.make({ retries: 0, ...options }), contents).pipe(withEnv())
  it.scoped("one stream killed with SIGKILL at half: the next run fetches only what was not flushed and recorded", () =>
    Effect.scoped(Effect.gen(function*() {
      const server = yield* Hub.make()
      const large = bytesOf(20 * MiB + 7, 31)
      server.push("acme/big", { "model.safetensors": large })
      server.stalled.add("model.safetensors")
      const cacheDir = yield* tempDir
      const kwargs = { repo_id: "acme/big", endpoint: server.endpoint, cache_dir: cacheDir, stall_timeout: 60 }
      // Below the threshold: one stream, which stops at half (the connection stays open).
      const first = runSelectionChild({ storage_type: "hf", storage_kwargs: kwargs }, { HF_TOKEN_PATH: "/nonexistent" })
      yield* untilCheckpointed(cacheDir, (parts) => (parts["0"] ?? 0) >= 8 * MiB)
      first.child.kill("SIGKILL")
      expect(yield* Effect.promise(() => first.done)).toEqual({ signal: "SIGKILL" })
      const kept = checkpointed(cacheDir)["0"]!
      server.stalled.clear()
      const before = server.requests("cdn").length
      const delivered = yield* load({ repoId: "acme/big", endpoint: server.endpoint, cacheDir })
      expect(delivered.map((file) => file.bytes)).toEqual([fingerprint(large)])
      // One ranged GET from the last checkpoint on: nothing recorded is fetched again.
      expect(server.requests("cdn").slice(before).map((entry) => entry.range)).toEqual([`bytes=${kept}-${large.byteLength - 1}`])
      expect(partsRecords(cacheDir)).toEqual([])
    })), 60_000)
})

withServer("HfStorage: straight into memory (cache: false)", (it) => {
  it.scoped("parts from the CDN into one buffer, checked against the LFS sha256; a corrupt or stalled file gives back its buffer and budget at once", () =>
    Effect.gen(function*() {
      const server = yield* Hub.make()
      const large = bytesOf(3 * MiB + 123, 17)
      server.push("acme/big", { "model.safetensors": large, "config.json": config })
      const cacheDir = yield* tempDir
      const make = (options: Partial<HfStorage.Options> = {}) =>
        HfStorage.make({
          repoId: "acme/big",
          endpoint: server.endpoint,
          cacheDir,
          ...intoMemoryInParts,
          ...options
        }).pipe(withEnv())
      const delivered = yield* contents(yield* make())
      expect(delivered.map((file) => [file.tag, file.path, file.bytes])).toEqual([
        ["Bytes", "hf://acme/big@main/config.json", fingerprint(new TextEncoder().encode(config))],
        ["Bytes", "hf://acme/big@main/model.safetensors", fingerprint(large)]
      ])
      expect(server.requests("cdn").filter((entry) => entry.range !== undefined).length).toBe(4)
      expect(filesUnder(cacheDir)).toEqual([])

      server.corrupt.add("model.safetensors")
      const corrupt = yield* budgetAfterFailure(yield* make())
      expect(corrupt.error).toMatchObject({ _tag: "ChecksumMismatch", algorithm: "sha256 (the Hub's LFS pointer)" })
      expect(corrupt.stillTaken).toBe(0)
      server.corrupt.clear()

      // One stream (below the threshold) that stops half-way: interrupted, everything goes back.
      server.stalled.add("model.safetensors")
      const before = server.requests("cdn").length
      const stalled = yield* budgetAfterFailure(
        yield* make({ multipartThresholdMb: 64 }),
        Effect.sync(() => server.requests("cdn").length > before)
      )
      expect(stalled.heldBefore).toBeGreaterThanOrEqual(large.byteLength)
      expect(stalled.stillTaken).toBe(0)
      expect(filesUnder(cacheDir)).toEqual([])
    }))
})

withServer("HfStorage: the Hub's API", (it) => {
  const load = (options: HfStorage.Options, vars?: Record<string, string>) =>
    Effect.flatMap(HfStorage.make({ retries: 0, ...options }), contents).pipe(withEnv(vars))

  it.effect("hf:// URIs: org/name, @revision (percent-encoded), a path, datasets and spaces, a bare name", () =>
    Effect.gen(function*() {
      const parse = (uri: string) => StorageUri.parse(uri)
      expect(parse("hf://acme/iris")).toMatchObject({ right: { storage_type: "hf", storage_kwargs: { repo_id: "acme/iris" } } })
      expect(parse("hf://acme/iris@v1.2/onnx/model.onnx")).toMatchObject({
        right: { storage_kwargs: { repo_id: "acme/iris", revision: "v1.2", path_in_repo: "onnx/model.onnx" } }
      })
      expect(parse("hf://acme/iris@refs%2Fpr%2F3/onnx/")).toMatchObject({
        right: { storage_kwargs: { repo_id: "acme/iris", revision: "refs/pr/3", path_in_repo: "onnx" } }
      })
      expect(parse("hf://datasets/acme/flowers@main/train")).toMatchObject({
        right: { storage_kwargs: { repo_id: "acme/flowers", repo_type: "dataset", revision: "main", path_in_repo: "train" } }
      })
      expect(parse("hf://spaces/acme/demo")).toMatchObject({ right: { storage_kwargs: { repo_type: "space" } } })
      expect(parse("hf://gpt2@main")).toMatchObject({ right: { storage_kwargs: { repo_id: "gpt2", revision: "main" } } })
      expect(parse("hf://acme/iris?x=1")._tag).toBe("Left")
      expect(parse("hf://acme/@v1")._tag).toBe("Left")
      expect(parse("hf://acme/iris@")._tag).toBe("Left")
      // A revision given twice (URI and kwarg) is refused, naming the kwarg.
      const twice = yield* Effect.flip(Storage.validate({
        storage_type: "hf",
        storage_kwargs: { storage_uri: "hf://acme/iris@v1", revision: "v2" }
      }))
      expect(twice).toMatchObject({ _tag: "InvalidStorageOptions", issues: [{ field: "revision" }] })
      const bad = yield* Effect.flip(Storage.validate({
        storage_type: "huggingface",
        storage_kwargs: { repo_id: "../etc", repo_type: "model-ish", endpoint: "ftp://x" }
      }))
      expect(bad._tag === "InvalidStorageOptions" && bad.issues.map((issue) => issue.field).sort()).toEqual(["endpoint", "repo_id", "repo_type"])
    }))

  it.effect("allow_patterns / ignore_patterns are Python's fnmatch, as huggingface_hub applies them", () =>
    Effect.sync(() => {
      const patterns = ["*.json", "*.onnx", "onnx/*", "onnx/", "*/model.onnx", "model.???", "[abc]*.bin", "[!abc]*.bin", "*.[oO]nnx", "[]x]*", "a[", "*"]
      const paths = ["config.json", "model.onnx", "onnx/model.onnx", "onnx/sub/x.bin", "a.bin", "d.bin", "model.Onnx", "]x.txt", "xx", "a[", ".gitattributes"]
      const script = `
import fnmatch, json, sys
patterns, paths = json.load(sys.stdin)
print(json.dumps([[fnmatch.fnmatch(p, pat + "*" if pat.endswith("/") else pat) for p in paths] for pat in patterns]))`
      const python = child.spawnSync("python3", ["-c", script], { input: JSON.stringify([patterns, paths]), encoding: "utf8" })
      expect(python.status).toBe(0)
      const expected = JSON.parse(python.stdout) as Array<Array<boolean>>
      const ours = patterns.map((pattern) => paths.map((p) => hub.globToRegExp(pattern).test(p)))
      expect(ours).toEqual(expected)
    }))

  it.scoped("one resolution per load: a push during the download does not mix commits; the tree is listed once per commit", () =>
    Effect.gen(function*() {
      const server = yield* Hub.make()
      server.treePageSize = 2
      const first = server.push("acme/iris", { ...files, "extra.json": "{}" })
      const cacheDir = yield* tempDir
      const newer = { "model.onnx": bytesOf(200_000, 99), "config.json": "{\"v\":2}" }
      let pushed: string | undefined
      server.beforeResolve = () => {
        pushed ??= server.push("acme/iris", newer)
      }
      const options = { repoId: "acme/iris", endpoint: server.endpoint, cacheDir, ignorePatterns: ["README.md", ".*"] }
      const delivered = yield* load(options)
      expect(delivered.map((file) => [file.name, file.bytes])).toEqual([
        ["config.json", fingerprint(new TextEncoder().encode(config))],
        ["extra.json", fingerprint(new TextEncoder().encode("{}"))],
        ["model.onnx", fingerprint(onnx)]
      ])
      // Every file came from the commit main pointed at when the load began, though main moved meanwhile.
      expect(pushed).toBeDefined()
      const resolves = server.requests("hub", /\/resolve\//)
      expect(resolves.length).toBe(3)
      for (const request of resolves) expect(request.url).toContain(`/resolve/${first}/`)
      // The tree came in pages (2 entries each), following the Link header.
      expect(server.requests("hub", new RegExp(`/tree/${first}`)).length).toBe(3)
      // Delivered as in the repository, in a snapshot folder.
      expect(fs.readFileSync(delivered[0]!.path!, "utf8")).toBe(config)

      // The next load sees the new commit; a repeat of it asks the Hub one question and fetches nothing.
      server.beforeResolve = undefined
      const next = yield* load(options)
      expect(next.map((file) => file.bytes)).toEqual([fingerprint(new TextEncoder().encode("{\"v\":2}")), fingerprint(newer["model.onnx"])])
      const before = server.log.length
      yield* load(options)
      expect(server.log.slice(before).map((entry) => entry.url)).toEqual(["/api/models/acme/iris/revision/main"])
      // A commit as revision: not even that question (its tree is cached).
      const pinned = server.log.length
      expect((yield* load({ ...options, revision: pushed! })).map((file) => file.name)).toEqual(["config.json", "model.onnx"])
      expect(server.log.slice(pinned).filter((entry) => entry.url.startsWith("/api/"))).toEqual([])
    }))

  it.scoped("LFS files are checked against the Hub's sha256, regular files against their git blob id; a bad one is never delivered", () =>
    Effect.gen(function*() {
      const server = yield* Hub.make()
      server.push("acme/iris", files)
      const cacheDir = yield* tempDir
      server.corrupt.add("model.onnx")
      const lfs = yield* Effect.flip(load({ repoId: "acme/iris", endpoint: server.endpoint, cacheDir, allowPatterns: "*.onnx" }))
      expect(lfs).toMatchObject({ _tag: "ChecksumMismatch", algorithm: "sha256 (the Hub's LFS pointer)", location: "hf://acme/iris@main/model.onnx" })
      server.corrupt.clear()
      server.corrupt.add("config.json")
      const regular = yield* Effect.flip(load({ repoId: "acme/iris", endpoint: server.endpoint, cacheDir, allowPatterns: "*.json" }))
      expect(regular).toMatchObject({ _tag: "ChecksumMismatch", algorithm: "git blob sha1" })
      // Nothing was published: offline there is nothing to deliver.
      const offline = yield* Effect.flip(load({ repoId: "acme/iris", endpoint: server.endpoint, cacheDir, offline: true }))
      expect(offline._tag).toBe("NotCached")
    }))

  it.scoped("the token goes to the Hub only: the CDN gets none; renamed repositories are followed", () =>
    Effect.gen(function*() {
      const server = yield* Hub.make()
      server.push("acme/secret", files, { visibility: "private" })
      server.grant("acme/secret", "hf_reader")
      server.rename("acme/secret", "acme/secret-v2")
      const delivered = yield* load({
        repoId: "acme/secret",
        endpoint: server.endpoint,
        cacheDir: yield* tempDir,
        allowPatterns: ["*.onnx"],
        token: Redacted.make("hf_reader")
      })
      expect(delivered.map((file) => file.bytes)).toEqual([fingerprint(onnx)])
      for (const request of server.requests("hub")) expect(request.authorization).toBe("Bearer hf_reader")
      expect(server.requests("hub", /\/acme\/secret-v2\//).length).toBeGreaterThan(0)
      const cdn = server.requests("cdn")
      expect(cdn.length).toBe(1)
      expect(cdn[0]!.authorization).toBeUndefined()
      // A tree whose next page is on another origin is not followed with the token.
      const other = server.push("acme/other", files)
      server.grant("acme/other", "hf_reader")
      server.treePageSize = 1
      server.nextPageOrigin = server.cdnOrigin
      const foreign = yield* Effect.flip(load({
        repoId: "acme/other",
        revision: other,
        endpoint: server.endpoint,
        cacheDir: yield* tempDir,
        token: Redacted.make("hf_reader")
      }))
      expect(foreign).toMatchObject({ _tag: "RequestRejected" })
      expect(foreign.message).toContain("another origin")
      expect(server.requests("cdn").length).toBe(1)
    }))

  it.scoped("the token from HF_TOKEN, or the file hf auth login writes; HF_ENDPOINT; HF_HUB_OFFLINE", () =>
    Effect.gen(function*() {
      const server = yield* Hub.make()
      server.push("acme/secret", files, { visibility: "private" })
      server.grant("acme/secret", "hf_from_env")
      server.grant("acme/secret", "hf_from_file")
      const cacheDir = yield* tempDir
      const options = { repoId: "acme/secret", cacheDir, allowPatterns: "*.json" }
      yield* load(options, { HF_TOKEN: "hf_from_env", HF_ENDPOINT: server.endpoint })
      expect(server.log.at(-1)!.authorization).toBe("Bearer hf_from_env")
      const home = yield* tempDir
      fs.writeFileSync(path.join(home, "token"), "hf_from_file\n")
      yield* load(options, { HF_HOME: home, HF_ENDPOINT: server.endpoint, HF_TOKEN_PATH: "" })
      expect(server.log.at(-1)!.authorization).toBe("Bearer hf_from_file")
      // Offline: the last snapshot of this repository and revision, without a request.
      const requests = server.log.length
      const offline = yield* load(options, { HF_HUB_OFFLINE: "1", HF_ENDPOINT: server.endpoint })
      expect(offline.map((file) => file.name)).toEqual(["config.json"])
      expect(server.log.length).toBe(requests)
      // The patterns apply offline too: a narrower selection of the same snapshot.
      yield* load({ ...options, allowPatterns: ["*.json", "*.onnx"] }, { HF_TOKEN: "hf_from_env", HF_ENDPOINT: server.endpoint })
      const narrower = yield* load({ ...options, allowPatterns: "*.onnx" }, { HF_HUB_OFFLINE: "1", HF_ENDPOINT: server.endpoint })
      expect(narrower.map((file) => file.name)).toEqual(["model.onnx"])
      const notCached = yield* Effect.flip(load({ ...options, revision: "v9" }, { HF_HUB_OFFLINE: "1", HF_ENDPOINT: server.endpoint }))
      expect(notCached._tag).toBe("NotCached")
    }))

  it.scoped("private, gated and missing: Unauthorized with a hint, or RemoteNotFound naming the repository, revision or file", () =>
    Effect.gen(function*() {
      const server = yield* Hub.make()
      server.push("acme/private", files, { visibility: "private" })
      server.push("acme/gated", files, { visibility: "gated" })
      server.push("acme/open", files)
      server.tokens.add("hf_someone")
      const cacheDir = yield* tempDir
      const attempt = (repoId: string, extra: Partial<HfStorage.Options> = {}) =>
        Effect.flip(load({ repoId, endpoint: server.endpoint, cacheDir, ...extra }))

      const privateRepo = yield* attempt("acme/private")
      expect(privateRepo).toMatchObject({ _tag: "Unauthorized", status: 401 })
      expect(privateRepo.message).toContain("HF_TOKEN")
      const gated = yield* attempt("acme/gated")
      expect(gated).toMatchObject({ _tag: "Unauthorized", status: 401 })
      expect(gated.message).toContain("gated")
      const notGranted = yield* attempt("acme/gated", { token: "hf_someone" })
      expect(notGranted).toMatchObject({ _tag: "Unauthorized", status: 403 })
      expect(notGranted.message).toContain("granted")
      expect(notGranted.message).not.toContain("hf_someone")
      const refused = yield* attempt("acme/open", { token: "hf_unknown" })
      expect(refused).toMatchObject({ _tag: "Unauthorized", status: 401 })
      expect(refused.message).toContain("token was refused")

      const missing = yield* attempt("acme/nothing", { token: "hf_someone" })
      expect(missing).toMatchObject({ _tag: "RemoteNotFound", status: 404 })
      expect(missing.message).toContain("acme/nothing")
      const revision = yield* attempt("acme/open", { revision: "v404" })
      expect(revision).toMatchObject({ _tag: "RemoteNotFound" })
      expect(revision.message).toContain("v404")
      const file = yield* attempt("acme/open", { pathInRepo: "weights/absent.bin" })
      expect(file).toMatchObject({ _tag: "RemoteNotFound", location: "hf://acme/open@main/weights/absent.bin" })
      const nothing = yield* attempt("acme/open", { allowPatterns: "*.safetensors" })
      expect(nothing).toMatchObject({ _tag: "NothingMatched", entries: 4 })
      expect(nothing.message).toContain("*.safetensors")
    }))

  it.scoped("a dataset by URI: a tag, a folder, names relative to it; a single file by path", () =>
    Effect.gen(function*() {
      const server = yield* Hub.make()
      const v1 = server.push("acme/flowers", { "train/a.parquet": "aaa", "train/b.parquet": "bbb", "test/c.parquet": "c" }, { type: "dataset" })
      server.tag("acme/flowers", "v1", v1, "dataset")
      server.push("acme/flowers", { "train/a.parquet": "changed" }, { type: "dataset" })
      const cacheDir = yield* tempDir
      const byUri = (uri: string) =>
        Effect.flatMap(
          Storage.fromSelection({ storage_type: "hf", storage_kwargs: { storage_uri: uri, endpoint: server.endpoint, cache_dir: cacheDir } }),
          contents
        ).pipe(withEnv())
      const train = yield* byUri("hf://datasets/acme/flowers@v1/train")
      expect(train.map((file) => [file.name, file.bytes])).toEqual([
        ["a.parquet", fingerprint(new TextEncoder().encode("aaa"))],
        ["b.parquet", fingerprint(new TextEncoder().encode("bbb"))]
      ])
      expect(server.requests("hub", /\/resolve\//).every((entry) => entry.url.startsWith(`/datasets/acme/flowers/resolve/${v1}/`))).toBe(true)
      const single = yield* byUri("hf://datasets/acme/flowers@v1/test/c.parquet")
      expect(single.map((file) => file.name)).toEqual(["c.parquet"])
    }))

  // A repository with one large file, loaded in 1 MiB parts.
  const largeInParts = (server: Hub.TestHub, seed: number, options: Partial<HfStorage.Options> = {}) =>
    Effect.gen(function*() {
      const large = bytesOf(3 * MiB + 123, seed)
      server.push("acme/big", { "model.safetensors": large })
      const delivered = yield* load({
        repoId: "acme/big",
        endpoint: server.endpoint,
        cacheDir: yield* tempDir,
        multipartThresholdMb: 1,
        partSizeMb: 1,
        ...options
      })
      return { large, delivered }
    })

  it.scoped("a large file comes from the CDN in parallel ranged parts, checked whole against the Hub's sha256", () =>
    Effect.gen(function*() {
      const server = yield* Hub.make()
      const { delivered, large } = yield* largeInParts(server, 7, { partConcurrency: 4 })
      expect(delivered.map((file) => file.bytes)).toEqual([fingerprint(large)])
      expect(server.requests("cdn").map((entry) => entry.range).sort()).toEqual([
        "bytes=0-1048575",
        "bytes=1048576-2097151",
        "bytes=2097152-3145727",
        `bytes=3145728-${3 * MiB + 122}`
      ])
      // The same bytes behind a corrupting CDN: every part arrives, the whole does not match, nothing is delivered.
      server.push("acme/big", { "model.safetensors": large, "other.safetensors": large })
      server.corrupt.add("other.safetensors")
      const corrupted = yield* Effect.flip(load({
        repoId: "acme/big",
        endpoint: server.endpoint,
        cacheDir: yield* tempDir,
        multipartThresholdMb: 1,
        partSizeMb: 1
      }))
      expect(corrupted).toMatchObject({ _tag: "ChecksumMismatch", algorithm: "sha256 (the Hub's LFS pointer)" })
    }))

  it.scoped("an hf:// path names a file with # or a space (percent-encoded in the URI)", () =>
    Effect.gen(function*() {
      const server = yield* Hub.make()
      server.push("acme/odd", { "dir/a#b c.bin": "odd", "dir/other.bin": "other" })
      const delivered = yield* Effect.flatMap(
        Storage.fromSelection({
          storage_type: "hf",
          storage_kwargs: { storage_uri: "hf://acme/odd/dir/a%23b%20c.bin", endpoint: server.endpoint, cache_dir: yield* tempDir }
        }),
        contents
      ).pipe(withEnv())
      expect(delivered.map((file) => [file.name, file.bytes])).toEqual([["a#b c.bin", fingerprint(new TextEncoder().encode("odd"))]])
      expect(server.requests("hub", /\/resolve\//).map((entry) => entry.url.split("/resolve/")[1]!.replace(/^[^/]+\//, "")))
        .toEqual(["dir/a%23b%20c.bin"])
    }))

  it.scoped("files finished before an interruption are not fetched again by the next load", () =>
    Effect.gen(function*() {
      const server = yield* Hub.make()
      const big = bytesOf(3 * MiB, 9)
      const small = bytesOf(20_000, 10)
      // a-small comes first (one file at a time, in name order); b-big is held until the interruption.
      server.push("acme/two", { "a-small.safetensors": small, "b-big.safetensors": big })
      const cacheDir = yield* tempDir
      const options = { repoId: "acme/two", endpoint: server.endpoint, cacheDir, concurrency: 1 }
      server.stalled.add("b-big.safetensors")
      const fiber = yield* Effect.fork(load(options))
      // Interrupted while b-big is under way (its body stalled half-way).
      yield* Effect.repeat(Effect.sync(() => server.requests("cdn").some((entry) => entry.url.includes("b-big"))), {
        until: (started) => started,
        schedule: Schedule.spaced("10 millis")
      })
      yield* Fiber.interrupt(fiber)
      server.stalled.clear()
      const smallGets = () => server.requests("cdn").filter((entry) => entry.url.includes("a-small")).length
      expect(smallGets()).toBe(1)
      const delivered = yield* load(options)
      expect(delivered.map((file) => [file.name, file.bytes])).toEqual([
        ["a-small.safetensors", fingerprint(small)],
        ["b-big.safetensors", fingerprint(big)]
      ])
      expect(smallGets()).toBe(1)
      // Nothing is left behind once published.
      expect(fs.readdirSync(cacheDir, { recursive: true, encoding: "utf8" }).filter((name) => name.endsWith(".done"))).toEqual([])
    }))

  it.scoped("a CDN that answers shorter ranges than asked (RFC 9110): the engine asks for the rest of each part", () =>
    Effect.gen(function*() {
      const server = yield* Hub.make()
      server.maxRangeLength = 400 * 1024
      const { delivered, large } = yield* largeInParts(server, 8, { partConcurrency: 2, retries: 0 })
      expect(delivered.map((file) => file.bytes)).toEqual([fingerprint(large)])
      const ranges = server.requests("cdn").map((entry) => entry.range!)
      // Each 1 MiB part in three answers (400 KiB, 400 KiB, 224 KiB), the last part in one.
      expect(ranges).toHaveLength(3 * 3 + 1)
      expect(ranges).toContain(`bytes=${400 * 1024}-${MiB - 1}`)
      expect(ranges).toContain(`bytes=${800 * 1024}-${MiB - 1}`)
    }))
})

withServer("HfStorage: watched (Storage.watch)", (it) => {
  it.scoped("one request per check (the revision's commit): a new version when a commit changed the files", () =>
    Effect.gen(function*() {
      const server = yield* Hub.make()
      const perCheck = yield* followsItsSource({
        storage: Storage.layerFromSelection({
          storage_type: "hf",
          storage_kwargs: { storage_uri: "hf://acme/iris", allow_patterns: ["*.onnx"], endpoint: server.endpoint, cache_dir: yield* tempDir }
        }).pipe(Layer.provide(env), Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map([["HF_TOKEN_PATH", "/nonexistent"]]))))),
        write: (text) => Effect.sync(() => void server.push("acme/iris", { "model.onnx": text, "README.md": "# iris" })),
        requests: () => server.log.length
      })
      expect(perCheck).toBe(1)
    }))
})
