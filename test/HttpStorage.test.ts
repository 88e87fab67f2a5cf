import { expect, layer } from "@effect/vitest"
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import { execFileSync, spawn } from "node:child_process"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as cache from "../src/internal/cache.js"
import * as HttpStorage from "../src/HttpStorage.js"
import * as Progress from "../src/Progress.js"
import * as Storage from "../src/Storage.js"
import { storageContract } from "../src/Testing.js"
import { archiveOf, bytesOf, contents, filesUnder, fingerprint, flipByte, checkpointed, eachPartAtLeast, onSmallDisk, platform, spyFileSystem, tempDir, untilCheckpointed } from "./helpers.js"
import * as TestServer from "./servers/http.js"
import { followsItsSource } from "./watching.js"

const root = path.resolve(import.meta.dirname, "..")
const quiet = Logger.minimumLogLevel(LogLevel.Error)
const model = bytesOf(3 * 1024 * 1024 + 17, 7)
// Files of 8 MiB or more are resumed (the engine's partial files); smaller ones are fetched again whole.
const large = bytesOf(10 * 1024 * 1024 + 3, 11)
const weights = bytesOf(100_000, 9)

const env = Layer.merge(platform, quiet)
// Live clock: retries, timeouts and the lock's waits are real.
const withServers = layer(env, { excludeTestServices: true })
const make = HttpStorage.make


const cacheFiles = (dir: string) => filesUnder(dir).map((file) => path.basename(file))

const fixture = (needLoadFile: boolean, cache = true) =>
  Effect.gen(function*() {
    const server = yield* TestServer.make()
    server.put("/models/model.onnx", model)
    server.put("/models/weights.bin", weights, { etag: false, lastModified: "Tue, 24 Nov 2026 10:00:00 GMT" })
    const cacheDir = yield* tempDir
    return {
      layer: HttpStorage.layer({
        urls: [server.url("/models/model.onnx"), server.url("/models/weights.bin")],
        cacheDir,
        needLoadFile,
        cache
      }).pipe(Layer.provide(Layer.merge(platform, quiet))),
      expected: [
        { _tag: needLoadFile ? "Bytes" as const : "Path" as const, name: "model.onnx", content: model },
        { _tag: needLoadFile ? "Bytes" as const : "Path" as const, name: "weights.bin", content: weights }
      ]
    }
  })

storageContract("HttpStorage (paths)", fixture(false))
// A zip link (as many model links are), unpacked: every file it holds, named from its root.
storageContract("HttpStorage (a model.zip, unpacked, bytes)", Effect.gen(function*() {
  const server = yield* TestServer.make()
  server.put("/models/model.zip", yield* archiveOf("zip", { "model.onnx": model, "weights.bin": weights }))
  return {
    layer: HttpStorage.layer({ urls: server.url("/models/model.zip"), cacheDir: yield* tempDir, needLoadFile: true, unpack: "auto" })
      .pipe(Layer.provide(Layer.merge(platform, quiet))),
    expected: [
      { _tag: "Bytes" as const, name: "model.onnx", content: model },
      { _tag: "Bytes" as const, name: "weights.bin", content: weights }
    ]
  }
}))
storageContract("HttpStorage (bytes)", fixture(true))
storageContract("HttpStorage (straight into memory, cache: false)", fixture(true, false))

withServers("HttpStorage: straight into memory (cache: false)", (it) => {
  const inMemory = (urls: ReadonlyArray<string>, options: Partial<HttpStorage.Options> = {}) =>
    Effect.flatMap(tempDir, (cacheDir) =>
      make({ urls, cacheDir, needLoadFile: true, cache: false, multipartThresholdMb: 1, partSizeMb: 1, retries: 0, ...options }))

  it.scoped("parallel ranged reads (capped 206s included) into one buffer, each carrying If-Range; nothing on disk", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make({ maxRangeLength: 300 * 1024 })
      server.put("/m.onnx", model)
      server.put("/w.bin", weights, { etag: false, lastModified: "Tue, 24 Nov 2026 10:00:00 GMT" })
      const cacheDir = yield* tempDir
      const storage = yield* make({
        urls: [server.url("/m.onnx"), server.url("/w.bin")],
        cacheDir,
        needLoadFile: true,
        cache: false,
        multipartThresholdMb: 1,
        partSizeMb: 1,
        sha256: { "m.onnx": crypto.createHash("sha256").update(model).digest("hex") }
      })
      const files = yield* contents(storage)
      expect(files.map((file) => [file.tag, file.name, file.path, file.bytes])).toEqual([
        ["Bytes", "m.onnx", server.url("/m.onnx"), fingerprint(model)],
        ["Bytes", "w.bin", server.url("/w.bin"), fingerprint(weights)]
      ])
      expect(filesUnder(cacheDir)).toEqual([])
      const reads = server.requests("/m.onnx").filter((r) => r.range !== "bytes=0-0")
      expect(reads.every((r) => r.status === 206 && r.ifRange !== undefined)).toBe(true)
      // Each byte asked for once: the capped answers' rest is asked for from where they ended.
      expect(reads.reduce((sum, r) => sum + r.bytes, 0)).toBe(model.byteLength)
      expect(reads.length).toBeGreaterThan(4)
    }))

  it.scoped("a server that ignores Range: one whole read; a file that changes during the load: ChecksumMismatch", () =>
    Effect.gen(function*() {
      const plain = yield* TestServer.make({ ignoreRange: true })
      plain.put("/m.onnx", model)
      const files = yield* contents(yield* inMemory([plain.url("/m.onnx")]))
      expect(files.map((file) => file.bytes)).toEqual([fingerprint(model)])
      expect(plain.requests("/m.onnx").length).toBe(2)

      // The file changes after it was resolved: the parts' If-Range fails, and the answer says it changed.
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      const meddling: Progress.Service = {
        publish: (event) =>
          event.phase === "fetching" && event.done === 0
            ? Effect.sync(() => server.put("/m.onnx", bytesOf(model.byteLength, 8)))
            : Effect.void,
        subscribe: Effect.succeed(Stream.empty)
      }
      const changed = yield* Effect.flip(
        Effect.provideService(Effect.flatMap(inMemory([server.url("/m.onnx")]), contents), Progress.Progress, meddling)
      )
      expect(changed).toMatchObject({ _tag: "ChecksumMismatch", location: server.url("/m.onnx") })
    }))

  it.scoped("a wrong sha256 is ChecksumMismatch; a server that announces no size is RequestRejected (load it through the cache)", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      server.put("/chunked.bin", weights, { chunked: true })
      const wrong = yield* Effect.flip(Effect.flatMap(inMemory([server.url("/m.onnx")], { sha256: "0".repeat(64) }), contents))
      expect(wrong).toMatchObject({ _tag: "ChecksumMismatch", algorithm: "sha256", expected: "0".repeat(64) })
      // A chunked body's size is still known from a 206's Content-Range...
      expect((yield* contents(yield* inMemory([server.url("/chunked.bin")]))).map((file) => file.bytes)).toEqual([
        fingerprint(weights)
      ])
      // ...but not from a server that ignores Range and sends it chunked.
      const plain = yield* TestServer.make({ ignoreRange: true })
      plain.put("/chunked.bin", weights, { chunked: true })
      const unsized = yield* Effect.flip(Effect.flatMap(inMemory([plain.url("/chunked.bin")]), contents))
      expect(unsized._tag).toBe("RequestRejected")
      expect(unsized.message).toContain("cache: true")
    }))
})

withServers("HttpStorage: the cache", (it) => {
  it.scoped("a second load revalidates with ETag or Last-Modified and reuses the cached copy", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      server.put("/w.bin", weights, { etag: false, lastModified: "Tue, 24 Nov 2026 10:00:00 GMT" })
      const cacheDir = yield* tempDir
      const storage = yield* make({ urls: [server.url("/m.onnx"), server.url("/w.bin")], cacheDir })
      yield* contents(storage)
      const again = yield* contents(storage)
      expect(again.map((file) => file.bytes)).toEqual([fingerprint(model), fingerprint(weights)])
      expect(server.requests("/m.onnx").map((r) => [r.status, r.ifNoneMatch !== undefined])).toEqual([
        [200, false],
        [304, true]
      ])
      // Without an ETag the Last-Modified date is the validator; this server then sends it again.
      expect(server.requests("/w.bin").map((r) => r.status)).toEqual([200, 200])
      expect(cacheFiles(cacheDir).sort()).toEqual(["m.onnx", "meta.json", "meta.json", "w.bin"])
    }))

  it.scoped("a changed file on the server replaces the cached one", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      const cacheDir = yield* tempDir
      const storage = yield* make({ urls: server.url("/m.onnx"), cacheDir })
      yield* contents(storage)
      server.put("/m.onnx", weights)
      const [file] = yield* contents(storage)
      expect(file!.bytes).toBe(fingerprint(weights))
    }))

  it.scoped("sha256 is verified; a mismatch is a typed error and leaves nothing in the cache", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      const cacheDir = yield* tempDir
      const good = yield* make({ urls: server.url("/m.onnx"), cacheDir, sha256: TestServer.sha256(model) })
      expect((yield* contents(good))[0]!.bytes).toBe(fingerprint(model))

      const otherCache = yield* tempDir
      server.fault("/m.onnx", { kind: "corrupt" })
      const bad = yield* make({ urls: server.url("/m.onnx"), cacheDir: otherCache, sha256: TestServer.sha256(model) })
      const error = yield* Effect.flip(contents(bad))
      expect(error._tag).toBe("ChecksumMismatch")
      if (error._tag !== "ChecksumMismatch") return
      expect(error.expected).toBe(TestServer.sha256(model))
      expect(error.location).toBe(server.url("/m.onnx"))
      expect(error.message).toContain("the file was removed")
      expect(cacheFiles(otherCache)).toEqual([])
    }))

  it.scoped("a cache that cannot be written is WriteFailed, naming the folder", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      const dir = yield* tempDir
      const file = path.join(dir, "not-a-folder")
      fs.writeFileSync(file, "")
      const error = yield* Effect.flip(contents(yield* make({ urls: server.url("/m.onnx"), cacheDir: file })))
      expect(error._tag).toBe("WriteFailed")
      if (error._tag !== "WriteFailed") return
      expect(error.path.startsWith(file)).toBe(true)
      expect(error.code).toBe("ENOTDIR")
      expect(server.log).toEqual([])
    }))

  it.scoped("offline: the cache only; not cached is a typed error", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      const cacheDir = yield* tempDir
      const offline = yield* make({ urls: server.url("/m.onnx"), cacheDir, offline: true })
      const error = yield* Effect.flip(contents(offline))
      expect(error._tag).toBe("NotCached")
      expect(error.message).toContain(cacheDir)
      yield* contents(yield* make({ urls: server.url("/m.onnx"), cacheDir }))
      const requests = server.log.length
      expect((yield* contents(offline))[0]!.bytes).toBe(fingerprint(model))
      expect(server.log.length).toBe(requests)
    }))
})

withServers("HttpStorage: faults", (it) => {
  const fast = Schedule.spaced("10 millis").pipe(Schedule.intersect(Schedule.recurs(3)))

  it.scoped("a connection dropped mid-body is resumed with Range + If-Range, not restarted", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", large)
      server.fault("/m.onnx", { kind: "drop", after: 3 * 1024 * 1024 }, { kind: "drop", after: 2 * 1024 * 1024 })
      const cacheDir = yield* tempDir
      const storage = yield* make({ urls: server.url("/m.onnx"), cacheDir, retrySchedule: fast })
      expect((yield* contents(storage))[0]!.bytes).toBe(fingerprint(large))
      const requests = server.requests("/m.onnx")
      expect(requests.map((r) => r.status)).toEqual([200, 206, 206])
      // Each resume starts where the file on disk ended (the body's bytes, flushed as the
      // connection dropped): nothing the client received is sent again.
      const starts = requests.slice(1).map((r) => Number(/^bytes=(\d+)-\d+$/.exec(r.range ?? "")?.[1]))
      expect(starts[0]).toBe(requests[0]!.bytes)
      expect(starts[1]).toBe(starts[0]! + requests[1]!.bytes)
      expect(requests[1]!.ifRange).toMatch(/^".*"$/)
      expect(requests.reduce((sum, r) => sum + r.bytes, 0)).toBe(large.byteLength)
      expect(cacheFiles(cacheDir)).toEqual(["m.onnx", "meta.json"])
    }))

  it.scoped("a file under 8 MiB cut off is fetched again whole (no partial file for it)", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      server.fault("/m.onnx", { kind: "drop", after: 1024 * 1024 })
      const cacheDir = yield* tempDir
      const storage = yield* make({ urls: server.url("/m.onnx"), cacheDir, retrySchedule: fast })
      expect((yield* contents(storage))[0]!.bytes).toBe(fingerprint(model))
      expect(server.requests("/m.onnx").map((r) => [r.status, r.range])).toEqual([[200, undefined], [200, undefined]])
    }))

  it.scoped("a server that ignores Range (yet says it accepts them): the download starts over without ranges and succeeds", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make({ ignoreRange: true })
      server.put("/m.onnx", large)
      server.fault("/m.onnx", { kind: "drop", after: 3 * 1024 * 1024 })
      const cacheDir = yield* tempDir
      const storage = yield* make({ urls: server.url("/m.onnx"), cacheDir, retrySchedule: fast })
      expect((yield* contents(storage))[0]!.bytes).toBe(fingerprint(large))
      // The resume's range is answered with the whole file: that answer is closed, and the file
      // fetched again from byte 0 in one plain GET.
      expect(server.requests("/m.onnx").map((r) => [r.status, r.range !== undefined])).toEqual([
        [200, false],
        [200, true],
        [200, false]
      ])
      expect(cacheFiles(cacheDir)).toEqual(["m.onnx", "meta.json"])
    }))

  it.scoped("500 then success; a wrong Content-Length is retried", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      server.fault("/m.onnx", { kind: "status", status: 500 }, { kind: "status", status: 503 }, { kind: "wrongLength" })
      const cacheDir = yield* tempDir
      const storage = yield* make({ urls: server.url("/m.onnx"), cacheDir, retrySchedule: fast })
      expect((yield* contents(storage))[0]!.bytes).toBe(fingerprint(model))
      // The body ended short of what was announced; the retry's answer announces another size (the
      // first was the lie): another file, so the URL is resolved again and the file fetched whole.
      expect(server.requests("/m.onnx").map((r) => r.status)).toEqual([500, 503, 200, 200, 200])
    }))

  it.scoped("429 with Retry-After: the storage waits at least as long as asked", () =>
    Effect.scoped(Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      server.fault("/m.onnx", { kind: "status", status: 429, retryAfter: "1" })
      const cacheDir = yield* tempDir
      const storage = yield* make({ urls: server.url("/m.onnx"), cacheDir, retrySchedule: fast })
      const started = Date.now()
      expect((yield* contents(storage))[0]!.bytes).toBe(fingerprint(model))
      expect(Date.now() - started).toBeGreaterThanOrEqual(990)
      expect(server.requests("/m.onnx").map((r) => r.status)).toEqual([429, 200])
    })))

  it.scoped("a Retry-After longer than allowed fails at once, saying so", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      server.fault("/m.onnx", { kind: "status", status: 503, retryAfter: "3600" })
      const cacheDir = yield* tempDir
      const storage = yield* make({ urls: server.url("/m.onnx"), cacheDir })
      const error = yield* Effect.flip(contents(storage))
      expect(error._tag).toBe("TransientFailure")
      expect(error.message).toContain("retry after 3600 s")
      expect(server.requests("/m.onnx").length).toBe(1)
    }))

  it.scoped("transient failures that persist: TransientFailure with the number of attempts", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      server.fault("/m.onnx", ...Array.from({ length: 10 }, () => ({ kind: "status" as const, status: 502 })))
      const cacheDir = yield* tempDir
      const storage = yield* make({ urls: server.url("/m.onnx"), cacheDir, retrySchedule: fast })
      const error = yield* Effect.flip(contents(storage))
      expect(error._tag).toBe("TransientFailure")
      if (error._tag !== "TransientFailure") return
      expect(error.attempts).toBe(4)
      expect(error.status).toBe(502)
      expect(server.requests("/m.onnx").length).toBe(4)
    }))

  it.scoped("a stalled body: StallTimeout after the retries, then a resume succeeds", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", large)
      server.fault("/m.onnx", { kind: "stall", after: 1000 }, { kind: "stall", after: 1000 })
      const cacheDir = yield* tempDir
      const options = { urls: server.url("/m.onnx"), cacheDir, stallTimeout: "300 millis", retries: 1 } as const
      const error = yield* Effect.flip(contents(yield* make(options)))
      expect(error._tag).toBe("StallTimeout")
      if (error._tag !== "StallTimeout") return
      expect(error).toMatchObject({ seconds: 0.3, attempts: 2 })
      // The partial download stays for the next run, which resumes it.
      const key = cache.keyOf(server.url("/m.onnx"))
      expect(cacheFiles(cacheDir).sort()).toEqual([`${key}.json`, `${key}.part`])
      expect((yield* contents(yield* make(options)))[0]!.bytes).toBe(fingerprint(large))
      expect(server.requests("/m.onnx").at(-1)!.range).toBe(`bytes=2000-${large.byteLength - 1}`)
    }))

  it.scoped("404 and 401/403 fail at once with typed errors; headers are secrets", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make({ authorization: "Bearer s3cr3t-token" })
      server.put("/m.onnx", model)
      const cacheDir = yield* tempDir
      const logs: Array<string> = []
      const logger = Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => logs.push(String(message))))
      const attempt = (urls: string, headers?: Record<string, string>) =>
        Effect.flip(
          Effect.flatMap(make({ urls, cacheDir, ...(headers ? { headers } : {}) }), contents).pipe(
            Effect.provide(logger)
          )
        )
      const missing = yield* attempt(server.url("/m.onnx"))
      expect(missing._tag).toBe("Unauthorized")
      expect(missing).toMatchObject({ status: 401 })
      const wrong = yield* attempt(server.url("/m.onnx"), { authorization: "Bearer wrong" })
      expect(wrong).toMatchObject({ _tag: "Unauthorized", status: 403 })
      const notFound = yield* attempt(server.url("/nothing.onnx"), { authorization: "Bearer s3cr3t-token" })
      expect(notFound).toMatchObject({ _tag: "RemoteNotFound", status: 404 })
      expect(server.log.length).toBe(3)

      const storage = yield* make({
        urls: server.url("/m.onnx"),
        cacheDir,
        headers: { authorization: Redacted.make("Bearer s3cr3t-token") }
      })
      expect((yield* contents(storage))[0]!.bytes).toBe(fingerprint(model))
      for (const text of [...logs, String(storage), JSON.stringify(wrong), wrong.message]) {
        expect(text).not.toContain("s3cr3t")
      }
    }))

  it.scoped("a redirect to another origin does not carry the caller's headers", () =>
    Effect.gen(function*() {
      const origin = yield* TestServer.make()
      const cdn = yield* TestServer.make()
      cdn.put("/blob", model)
      origin.fault("/m.onnx", { kind: "redirect", to: cdn.url("/blob") })
      const cacheDir = yield* tempDir
      const storage = yield* make({ urls: origin.url("/m.onnx"), cacheDir, headers: { authorization: "Bearer x" } })
      const [file] = yield* contents(storage)
      expect(file).toMatchObject({ name: "m.onnx", bytes: fingerprint(model) })
      expect(origin.requests("/m.onnx")[0]!.authorization).toBe("Bearer x")
      expect(cdn.requests("/blob")[0]!.authorization).toBeUndefined()
    }))
})

withServers("HttpStorage: interruption and concurrency", (it) => {
  it.scoped("interrupted mid-download: no lock and no file under its final name; the partial is kept and resumed", () =>
    Effect.scoped(Effect.gen(function*() {
      const server = yield* TestServer.make({ chunkSize: 64 * 1024, delayMs: 10 })
      server.put("/m.onnx", large)
      const cacheDir = yield* tempDir
      const storage = yield* make({ urls: server.url("/m.onnx"), cacheDir })
      const fiber = yield* Effect.fork(contents(storage))
      // Wait until a checkpoint is recorded (bytes flushed, every quarter of the file here).
      yield* untilCheckpointed(cacheDir, (parts) => (parts["0"] ?? 0) > 0)
      yield* Fiber.interrupt(fiber)
      const key = cache.keyOf(server.url("/m.onnx"))
      expect(cacheFiles(cacheDir).sort()).toEqual([`${key}.json`, `${key}.part`])
      const kept = checkpointed(cacheDir)["0"]
      expect((yield* contents(storage))[0]!.bytes).toBe(fingerprint(large))
      // Straight to the rest, from the checkpoint (no first GET again).
      expect(server.requests("/m.onnx").slice(1)).toMatchObject([
        { status: 206, range: `bytes=${kept}-${large.byteLength - 1}` }
      ])
      expect(cacheFiles(cacheDir).sort()).toEqual(["m.onnx", "meta.json"])
    })))

  it.scoped("two fibers loading the same model at once download it once and both get it", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make({ chunkSize: 256 * 1024, delayMs: 5 })
      server.put("/m.onnx", model)
      const cacheDir = yield* tempDir
      const storage = yield* make({ urls: server.url("/m.onnx"), cacheDir })
      const [a, b] = yield* Effect.all([contents(storage), contents(storage)], { concurrency: 2 })
      expect(a[0]!.bytes).toBe(fingerprint(model))
      expect(b[0]!.bytes).toBe(fingerprint(model))
      expect(server.requests("/m.onnx").map((r) => r.status)).toEqual([200])
    }))

  it.scoped("progress is a Stream of events, per file and overall, ending complete", () =>
    Effect.scoped(Effect.gen(function*() {
      const server = yield* TestServer.make({ chunkSize: 256 * 1024, delayMs: 30 })
      server.put("/m.onnx", model)
      server.put("/w.bin", weights)
      const cacheDir = yield* tempDir
      const progress = yield* Progress.make
      const events = yield* progress.subscribe
      const collected = yield* Effect.fork(Stream.runCollect(Stream.take(
        Stream.filter(events, (e) => e.phase === "done"),
        2
      ).pipe(Stream.zipWithIndex)))
      const all: Array<Progress.Event> = []
      const watcher = yield* Effect.fork(Stream.runForEach(yield* progress.subscribe, (e) => Effect.sync(() => all.push(e))))
      const storage = yield* make({ urls: [server.url("/m.onnx"), server.url("/w.bin")], cacheDir })
      yield* Effect.provideService(contents(storage), Progress.Progress, progress)
      yield* Fiber.join(collected)
      yield* Fiber.interrupt(watcher)
      const total = model.byteLength + weights.byteLength
      const last = all.at(-1)!
      expect(last).toMatchObject({ phase: "done", overallDone: total, overallTotal: total })
      const modelEvents = all.filter((e) => e.name === "m.onnx")
      expect(modelEvents.some((e) => e.phase === "fetching" && e.done > 0 && e.done < model.byteLength)).toBe(true)
      expect(modelEvents.at(-1)).toMatchObject({ done: model.byteLength, total: model.byteLength, phase: "done" })
    })))
})

const runChild = (url: string, cacheDir: string, extra?: Partial<HttpStorage.Options>) => {
  const args = ["--import", "tsx", "test/fixtures/http-child.ts", url, cacheDir, ...(extra === undefined ? [] : [JSON.stringify(extra)])]
  const child = spawn(process.execPath, args, {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"]
  })
  let out = ""
  child.stdout.on("data", (chunk) => (out += chunk))
  // The outcome is the last line; log lines (a lock taken over, say) come before it.
  const done = new Promise<unknown>((resolve, reject) =>
    child.on("exit", (code, signal) => {
      try {
        if (signal !== null) resolve({ signal })
        else if (code === 0) resolve(JSON.parse(out.trim().split("\n").at(-1)!))
        else reject(new Error(`exit ${code}: ${out}`))
      } catch (error) {
        reject(error)
      }
    })
  )
  return { child, done }
}

withServers("HttpStorage: processes", (it) => {
  it.scoped("two processes fetching the same model at once: one download, both get it", () =>
    Effect.scoped(Effect.gen(function*() {
      const server = yield* TestServer.make({ chunkSize: 256 * 1024, delayMs: 10 })
      server.put("/m.onnx", model)
      const cacheDir = yield* tempDir
      const a = runChild(server.url("/m.onnx"), cacheDir)
      const b = runChild(server.url("/m.onnx"), cacheDir)
      const results = yield* Effect.promise(() => Promise.all([a.done, b.done]))
      const expected = { files: [{ name: "m.onnx", size: model.byteLength, sha256: TestServer.sha256(model) }] }
      expect(results).toEqual([expected, expected])
      expect(server.requests("/m.onnx").filter((r) => r.status === 200 || r.status === 206).length).toBe(1)
    })), 60_000)

  it.scoped("a killed downloader: the next process takes over its lock and resumes its partial file", () =>
    Effect.scoped(Effect.gen(function*() {
      const server = yield* TestServer.make({ chunkSize: 64 * 1024, delayMs: 10 })
      server.put("/m.onnx", large)
      const cacheDir = yield* tempDir
      const first = runChild(server.url("/m.onnx"), cacheDir)
      // One stream, checkpointed every quarter of the file: wait for the first.
      yield* untilCheckpointed(cacheDir, (parts) => (parts["0"] ?? 0) > 0)
      first.child.kill("SIGKILL")
      expect(yield* Effect.promise(() => first.done)).toEqual({ signal: "SIGKILL" })
      expect(cacheFiles(cacheDir)).toContain("lock")
      const resumedFrom = checkpointed(cacheDir)["0"]

      const second = runChild(server.url("/m.onnx"), cacheDir)
      const result = yield* Effect.promise(() => second.done)
      expect(result).toEqual({ files: [{ name: "m.onnx", size: large.byteLength, sha256: TestServer.sha256(large) }] })
      const last = server.requests("/m.onnx").at(-1)!
      expect(last.status).toBe(206)
      expect(last.range).toBe(`bytes=${resumedFrom}-${large.byteLength - 1}`)
      expect(cacheFiles(cacheDir).sort()).toEqual(["m.onnx", "meta.json"])
    })), 60_000)
})

withServers("HttpStorage: parts after SIGKILL", (it) => {
  it.scoped("parts of a killed downloader resume from their last flushed, recorded bytes (the engine's checkpoints)", () =>
    Effect.scoped(Effect.gen(function*() {
      const MiB = 1024 * 1024
      const big = bytesOf(4 * MiB, 47)
      const server = yield* TestServer.make({ chunkSize: 64 * 1024, delayMs: 20 })
      server.put("/big.bin", big)
      const cacheDir = yield* tempDir
      const parts = { multipartThresholdMb: 1, partSizeMb: 1, partConcurrency: 4 }
      const first = runChild(server.url("/big.bin"), cacheDir, parts)
      // Checkpoints every 256 KiB (a quarter of a part): wait until each part has one.
      yield* untilCheckpointed(cacheDir, eachPartAtLeast(4, 256 * 1024))
      first.child.kill("SIGKILL")
      expect(yield* Effect.promise(() => first.done)).toEqual({ signal: "SIGKILL" })
      const kept = checkpointed(cacheDir)
      const before = server.requests("/big.bin").length
      const second = runChild(server.url("/big.bin"), cacheDir, parts)
      expect(yield* Effect.promise(() => second.done)).toEqual({
        files: [{ name: "big.bin", size: big.byteLength, sha256: TestServer.sha256(big) }]
      })
      // No first GET again: straight to the parts, each from its checkpoint.
      expect(server.requests("/big.bin").slice(before).map((r) => r.range).sort()).toEqual(
        [0, 1, 2, 3].map((i) => `bytes=${i * MiB + kept[String(i)]!}-${(i + 1) * MiB - 1}`).sort()
      )
      expect(cacheFiles(cacheDir).sort()).toEqual(["big.bin", "meta.json"])
    })), 60_000)
})

withServers("HttpStorage: options and selection", (it) => {
  it.effect("bad kwargs are typed errors naming each field", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.provide(
        Storage.fromSelection({
          storage_type: "http",
          storage_kwargs: { urls: ["ftp://x/y", "not a url"], retries: -1, stall_timeout: 0, colour: "red" }
        }),
        platform
      ))
      expect(error._tag).toBe("InvalidStorageOptions")
      if (error._tag !== "InvalidStorageOptions") return
      const fields = error.issues.map((issue) => issue.field)
      expect(fields).toEqual(expect.arrayContaining(["urls.0", "urls.1", "retries", "stall_timeout", "colour"]))
      const missing = yield* Effect.flip(Effect.provide(
        Storage.fromSelection({ storage_type: "http", storage_kwargs: {} }),
        platform
      ))
      expect(missing.message).toContain("urls: is missing")
      const digest = yield* Effect.flip(make({ urls: ["http://127.0.0.1/a", "http://127.0.0.1/b"], sha256: "ab".repeat(32) }))
      expect(digest.message).toContain("sha256: is one digest for several URLs")
      const inCode = yield* Effect.flip(make({ urls: "http://127.0.0.1/a", stallTimeout: 0 }))
      expect(inCode.message).toContain("stallTimeout")
    }))

  it.scoped("selected by storage_type and from Config, with a sha256 map by file name", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      const cacheDir = yield* tempDir
      const kwargs = { urls: [server.url("/m.onnx")], cache_dir: cacheDir, sha256: { "m.onnx": TestServer.sha256(model) } }
      const fromSelection = yield* Storage.fromSelection({ storage_type: "http", storage_kwargs: kwargs })
      expect((yield* contents(fromSelection))[0]!.bytes).toBe(fingerprint(model))
      const fromConfig = yield* Effect.withConfigProvider(
        Storage.fromConfig(),
        ConfigProvider.fromMap(
          new Map([
            ["STORAGE_TYPE", "http"],
            ["STORAGE_KWARGS", JSON.stringify(kwargs)],
            ["STORAGE_KWARGS_NEED_LOAD_FILE", "true"]
          ]),
          { pathDelim: "_" }
        )
      )
      const [file] = yield* contents(fromConfig)
      expect(file).toMatchObject({ tag: "Bytes", bytes: fingerprint(model) })
    }))
})

withServers("HttpStorage: integrity against real servers and disks", (it) => {
  const noRetry = Schedule.stop
  // Large enough to be resumed (8 MiB or more).
  const v1 = bytesOf(10 * 1024 * 1024, 21)
  const v2 = bytesOf(10 * 1024 * 1024, 22)
  const partialOf = (cacheDir: string) =>
    filesUnder(cacheDir).find((file) => file.endsWith(".part") || file.endsWith(".partial"))

  // A first run is cut off after 3 MiB of v1 (its partial stays); then the server has v2.
  const cutOffThenChanged = (server: TestServer.TestHttpServer, cacheDir: string, next: Uint8Array, extra = {}) =>
    Effect.gen(function*() {
      server.fault("/m.onnx", { kind: "drop", after: 3 * 1024 * 1024 })
      const first = yield* Effect.flip(contents(yield* make({ urls: server.url("/m.onnx"), cacheDir, retrySchedule: noRetry })))
      expect(first._tag).toBe("TransientFailure")
      expect(partialOf(cacheDir)).toBeDefined()
      server.put("/m.onnx", next, extra)
    })

  it.scoped("a server that ignores If-Range answers a resume with 206 of a new version: no splice, the new version whole", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make({ ignoreIfRange: true })
      server.put("/m.onnx", v1)
      const cacheDir = yield* tempDir
      yield* cutOffThenChanged(server, cacheDir, v2)
      const storage = yield* make({ urls: server.url("/m.onnx"), cacheDir })
      expect((yield* contents(storage))[0]!.bytes).toBe(fingerprint(v2))
      // The resume was asked for (from the bytes the cut-off run flushed), its 206 refused (another
      // ETag), and the file fetched from byte 0.
      expect(server.requests("/m.onnx").slice(1).map((r) => [r.status, r.range])).toEqual([
        [206, `bytes=${server.requests("/m.onnx")[0]!.bytes}-${v2.byteLength - 1}`],
        [200, undefined]
      ])
      // Later runs revalidate the right file, not a splice.
      expect((yield* contents(storage))[0]!.bytes).toBe(fingerprint(v2))
      expect(server.requests("/m.onnx").at(-1)!.status).toBe(304)
    }))

  it.scoped("without an ETag, a 206 whose Last-Modified or total size differs starts over", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make({ ignoreIfRange: true })
      const longer = bytesOf(11 * 1024 * 1024, 23)
      server.put("/m.onnx", v1, { etag: false, lastModified: "Tue, 24 Nov 2026 10:00:00 GMT" })
      const cacheDir = yield* tempDir
      // Same Last-Modified (a clock that did not move), other total size.
      yield* cutOffThenChanged(server, cacheDir, longer, { etag: false, lastModified: "Tue, 24 Nov 2026 10:00:00 GMT" })
      const storage = yield* make({ urls: server.url("/m.onnx"), cacheDir })
      expect((yield* contents(storage))[0]!.bytes).toBe(fingerprint(longer))
      expect(server.requests("/m.onnx").slice(1).map((r) => r.status)).toEqual([206, 200])

      // Other Last-Modified, same size.
      const other = yield* tempDir
      server.put("/m.onnx", v1, { etag: false, lastModified: "Tue, 24 Nov 2026 10:00:00 GMT" })
      yield* cutOffThenChanged(server, other, v2, { etag: false, lastModified: "Wed, 25 Nov 2026 10:00:00 GMT" })
      expect((yield* contents(yield* make({ urls: server.url("/m.onnx"), cacheDir: other })))[0]!.bytes).toBe(
        fingerprint(v2)
      )
    }))

  it.scoped("a weak ETag is never used to resume: the next run starts from byte 0", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", v1, { etag: "W/\"weak\"", lastModified: false })
      const cacheDir = yield* tempDir
      yield* cutOffThenChanged(server, cacheDir, v1, { etag: "W/\"weak\"", lastModified: false })
      expect((yield* contents(yield* make({ urls: server.url("/m.onnx"), cacheDir })))[0]!.bytes).toBe(fingerprint(v1))
      expect(server.requests("/m.onnx").slice(1).map((r) => [r.status, r.range, r.ifRange])).toEqual([
        [200, undefined, undefined]
      ])
    }))

  it.scoped("a cached file changed on disk is re-hashed: fetched again online, a typed error offline, never delivered", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      const cacheDir = yield* tempDir
      for (const sha256 of [TestServer.sha256(model), undefined]) {
        const options = { urls: server.url("/m.onnx"), cacheDir, sha256 }
        const [first] = yield* contents(yield* make(options))
        flipByte(first!.path, 1000)
        // Online: the server would answer 304; the copy is fetched again instead.
        const before = server.requests("/m.onnx").length
        expect((yield* contents(yield* make(options)))[0]!.bytes).toBe(fingerprint(model))
        expect(server.requests("/m.onnx").slice(before).map((r) => [r.status, r.ifNoneMatch])).toEqual([[200, undefined]])
        // Offline: a typed error, and the copy is removed.
        flipByte(first!.path, 1000)
        const error = yield* Effect.flip(contents(yield* make({ ...options, offline: true })))
        expect(error).toMatchObject({ _tag: "ChecksumMismatch", algorithm: "sha256", expected: TestServer.sha256(model) })
        expect(error.message).toContain(first!.path)
        expect(fs.existsSync(first!.path)).toBe(false)
        expect(yield* Effect.flip(contents(yield* make({ ...options, offline: true })))).toMatchObject({ _tag: "NotCached" })
      }
    }))

  it.scoped("verify: an intact cached file is hashed again only when it changed, or always with verify \"always\"", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      const cacheDir = yield* tempDir
      const reads = (verify: "changed" | "always") =>
        Effect.gen(function*() {
          const spy = yield* spyFileSystem()
          const storage = yield* make({ urls: server.url("/m.onnx"), cacheDir, verify }).pipe(
            Effect.provide(Layer.merge(platform, spy.layer))
          )
          yield* contents(storage)
          return spy.log.wholeReads.filter((file) => file.endsWith("m.onnx"))
        })
      yield* reads("changed")
      expect(yield* reads("changed")).toEqual([])
      expect(yield* reads("always")).toHaveLength(1)
      // A touch changes the identity: hashed once, found intact, and the new identity recorded.
      const file = path.join(cacheDir, filesUnder(cacheDir).find((name) => name.endsWith("m.onnx"))!)
      fs.utimesSync(file, new Date(), new Date(Date.now() - 5000))
      expect(yield* reads("changed")).toHaveLength(1)
      expect(yield* reads("changed")).toEqual([])
      expect(server.requests("/m.onnx").map((r) => r.status)).toEqual([200, 304, 304, 304, 304])
    }))

  it.scoped("two URLs delivered under one name are invalid options naming both (credentials redacted)", () =>
    Effect.gen(function*() {
      const a = "https://user:hunter2@models.example/a/model.bin"
      const b = "https://models.example/b/model.bin?X-Amz-Signature=abc123&X-Amz-Credential=AKIA"
      const error = yield* Effect.flip(make({ urls: [a, b] }))
      expect(error._tag).toBe("InvalidStorageOptions")
      const problem = error.issues.find((issue) => issue.field === "urls")!.problem
      expect(problem).toContain("https://REDACTED@models.example/a/model.bin")
      expect(problem).toContain("https://models.example/b/model.bin?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED")
      expect(problem).not.toMatch(/hunter2|abc123|AKIA/)
      // Storage.validate (what `mlup-storage check` runs) says the same, without making anything.
      const invalid = yield* Effect.flip(Storage.validate({ storage_type: "http", storage_kwargs: { urls: [a, b] } }))
      expect(invalid._tag).toBe("InvalidStorageOptions")
    }))

  it.scoped("URLs with credentials or signatures are redacted in errors, logs and progress", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      const cacheDir = yield* tempDir
      const url = server.url("/missing.onnx").replace("http://", "http://admin:hunter2@") + "?sig=s3cr3t&token=t0k3n&v=1"
      server.fault("/missing.onnx", { kind: "status", status: 503 })
      const logs: Array<string> = []
      const logger = Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => logs.push(String(message))))
      const progress = yield* Progress.make
      const events: Array<Progress.Event> = []
      yield* Effect.forkScoped(Stream.runForEach(yield* progress.subscribe, (e) => Effect.sync(() => events.push(e))))
      const error = yield* Effect.flip(
        contents(yield* make({ urls: url, cacheDir, retrySchedule: Schedule.recurs(1) })).pipe(
          Effect.provideService(Progress.Progress, progress),
          Effect.provide(logger),
          Logger.withMinimumLogLevel(LogLevel.Debug)
        )
      )
      expect(error._tag).toBe("RemoteNotFound")
      const shown = [error.message, JSON.stringify(error), ...logs, ...events.map((e) => e.location)].join("\n")
      expect(logs.some((line) => line.includes("retrying"))).toBe(true)
      expect(shown).toContain("REDACTED")
      expect(shown).not.toMatch(/hunter2|s3cr3t|t0k3n/)
      // Nor is the URL written into the cache (it is keyed by a digest).
      for (const file of filesUnder(cacheDir)) {
        expect(fs.readFileSync(path.join(cacheDir, file), "utf8")).not.toMatch(/hunter2|s3cr3t|t0k3n/)
      }
    }))

  it.scoped("a 100 KB URL is quoted capped in every log line and message", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      // Nobody listens at the URL's port once the server is gone: every attempt fails and is logged.
      const url = server.url(`/${"x".repeat(100_000)}.onnx`)
      yield* Effect.promise(() => server.close())
      const logs: Array<string> = []
      const logger = Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => logs.push(String(message))))
      const error = yield* Effect.flip(
        contents(yield* make({ urls: url, cacheDir: yield* tempDir, retrySchedule: Schedule.recurs(2) })).pipe(
          Effect.provide(logger),
          Logger.withMinimumLogLevel(LogLevel.Debug)
        )
      )
      expect(error._tag).toBe("TransientFailure")
      expect(logs.filter((line) => line.includes("retrying"))).toHaveLength(2)
      for (const line of [...logs, error.message]) {
        expect(line.length).toBeLessThan(1200)
      }
      expect(error.message).toContain("more characters")
    }))

  it.scoped("the last attempt is not logged as retried", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      server.fault("/m.onnx", { kind: "status", status: 500 }, { kind: "status", status: 500 })
      const cacheDir = yield* tempDir
      const logs: Array<string> = []
      const logger = Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => logs.push(String(message))))
      const error = yield* Effect.flip(
        contents(yield* make({ urls: server.url("/m.onnx"), cacheDir, retrySchedule: Schedule.recurs(1) })).pipe(
          Effect.provide(logger),
          Logger.withMinimumLogLevel(LogLevel.Debug)
        )
      )
      expect(error).toMatchObject({ _tag: "TransientFailure", attempts: 2 })
      expect(logs.filter((line) => line.includes("retrying"))).toEqual([
        expect.stringMatching(/^Attempt 1 for .* failed \(HTTP 500\); retrying in \d+\.\d s$/)
      ])
    }))
})

withServers("HttpStorage: locks that are never judged wrongly", (it) => {
  const lockOf = (cacheDir: string, url: string) => path.join(cacheDir, "http", cache.keyOf(url), "lock")
  const leaveLock = (file: string, content: string, ageSeconds: number) => {
    fs.mkdirSync(path.dirname(file), { recursive: true })
    fs.writeFileSync(file, content)
    const then = new Date(Date.now() - ageSeconds * 1000)
    fs.utimesSync(file, then, then)
  }
  const withLogs = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    Effect.gen(function*() {
      const logs: Array<string> = []
      const logger = Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => logs.push(String(message))))
      const result = yield* Effect.either(effect.pipe(Effect.provide(logger), Logger.withMinimumLogLevel(LogLevel.Info)))
      return { result, logs }
    })

  it.scoped("an empty lock file (a crash between create and write) without a heartbeat for a minute is taken over", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      const cacheDir = yield* tempDir
      leaveLock(lockOf(cacheDir, server.url("/m.onnx")), "", 60)
      const { result, logs } = yield* withLogs(contents(yield* make({ urls: server.url("/m.onnx"), cacheDir })))
      expect(result._tag).toBe("Right")
      expect(logs.some((line) => line.includes("Took over the lock") && line.includes("unknown holder"))).toBe(true)
    }))

  it.scoped("a lock naming a pid that is alive again (pid 1, or this very process) but without a heartbeat is taken over", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      for (const pid of [1, process.pid]) {
        const cacheDir = yield* tempDir
        leaveLock(
          lockOf(cacheDir, server.url("/m.onnx")),
          JSON.stringify({ pid, host: os.hostname(), token: "a-restarted-container", since: Date.now() - 120_000 }),
          60
        )
        const { result, logs } = yield* withLogs(contents(yield* make({ urls: server.url("/m.onnx"), cacheDir })))
        expect(result._tag).toBe("Right")
        expect(logs.some((line) => line.includes("Took over the lock") && line.includes(`pid ${pid} on`))).toBe(true)
      }
    }))

  it.scoped("a cached copy the server confirms (304) is delivered without the lock; a new version waits for it", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      const cacheDir = yield* tempDir
      const storage = yield* make({ urls: server.url("/m.onnx"), cacheDir, lockTimeout: "1 second" })
      yield* contents(storage)
      // Another process downloads into this entry now: its lock, with a heartbeat.
      const lock = lockOf(cacheDir, server.url("/m.onnx"))
      leaveLock(lock, JSON.stringify({ pid: process.pid, host: os.hostname(), token: "another", since: Date.now() }), 0)
      const beat = setInterval(() => fs.utimesSync(lock, new Date(), new Date()), 200)
      yield* Effect.addFinalizer(() => Effect.sync(() => clearInterval(beat)))
      expect((yield* contents(storage)).map((file) => file.bytes)).toEqual([fingerprint(model)])
      expect(server.requests("/m.onnx").map((r) => r.status)).toEqual([200, 304])
      // A new version is written under the lock only: this load waits, and gives up.
      server.put("/m.onnx", weights)
      const result = yield* Effect.either(contents(storage))
      expect(result._tag === "Left" && result.left._tag).toBe("LockTimeout")
      expect(fs.readFileSync(lock, "utf8")).toContain("another")
    }))

  // A model on a server, and an empty lock on its cache entry, made a moment ago.
  const emptyLockHeld = Effect.gen(function*() {
    const server = yield* TestServer.make()
    server.put("/m.onnx", model)
    const cacheDir = yield* tempDir
    const lock = lockOf(cacheDir, server.url("/m.onnx"))
    leaveLock(lock, "", 0)
    return { server, cacheDir, lock }
  })

  it.scoped("a live lock: the wait is logged at WARN with the holder and how long, and ends with LockTimeout", () =>
    Effect.gen(function*() {
      const { cacheDir, lock, server } = yield* emptyLockHeld
      // Someone keeps it alive: its heartbeat.
      const beat = setInterval(() => fs.utimesSync(lock, new Date(), new Date()), 200)
      yield* Effect.addFinalizer(() => Effect.sync(() => clearInterval(beat)))
      const { result, logs } = yield* withLogs(
        contents(yield* make({ urls: server.url("/m.onnx"), cacheDir, lockTimeout: "1500 millis" }))
      )
      expect(result._tag === "Left" && result.left).toMatchObject({
        _tag: "LockTimeout",
        lockFile: lock,
        seconds: expect.any(Number),
        alive: true
      })
      expect(result._tag === "Left" && result.left.message).toContain("raise lock_timeout, or stop that process")
      expect(logs.some((line) => /^Waiting for the lock of .* held by an unknown holder/.test(line))).toBe(true)
      expect(server.requests("/m.onnx")).toEqual([])
    }))

  it.scoped("an orphaned empty lock and a lock_timeout shorter than the staleness window: not called alive", () =>
    Effect.gen(function*() {
      // Made a moment ago by a process cut off before it wrote itself in: no heartbeat follows.
      const { cacheDir, lock, server } = yield* emptyLockHeld
      const result = yield* Effect.flip(contents(yield* make({ urls: server.url("/m.onnx"), cacheDir, lockTimeout: "1500 millis" })))
      expect(result).toMatchObject({ _tag: "LockTimeout", lockFile: lock, alive: false, staleAfterSeconds: 30 })
      expect(result.message).toContain("shows no sign of life")
      expect(result.message).toContain("remove the lock file")
      expect(result.message).not.toContain("stop that process")
    }))

  it.scoped("two processes: the second gives up after its lock_timeout, naming the first's pid", () =>
    Effect.scoped(Effect.gen(function*() {
      const server = yield* TestServer.make({ chunkSize: 16 * 1024, delayMs: 50 })
      server.put("/m.onnx", model)
      const cacheDir = yield* tempDir
      const first = runChild(server.url("/m.onnx"), cacheDir)
      yield* Effect.repeat(Effect.sync(() => fs.existsSync(lockOf(cacheDir, server.url("/m.onnx")))), {
        until: (found) => found,
        schedule: Schedule.spaced("10 millis")
      })
      const second = runChild(server.url("/m.onnx"), cacheDir, { lockTimeout: "1 second" })
      const b = yield* Effect.promise(() => second.done)
      expect(b).toMatchObject({ error: { _tag: "LockTimeout", holder: expect.stringContaining(`pid ${first.child.pid} on`) } })
      // The first was still downloading all along (the second sent no request).
      expect(first.child.exitCode).toBe(null)
      expect(server.requests("/m.onnx")).toHaveLength(1)
      first.child.kill("SIGKILL")
      yield* Effect.promise(() => first.done)
    })), 60_000)
})

withServers("HttpStorage: a full disk", (it) => {
  it.scoped("free space is checked first; after ENOSPC a run can still start, and frees the old partial for a new version", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      const big = bytesOf(3 * 1024 * 1024, 31)
      const small = bytesOf(200 * 1024, 32)
      const cacheDir = yield* tempDir
      const disk = yield* onSmallDisk(cacheDir)
      const load = (kwargs: object) =>
        disk.load({ storage_type: "http", storage_kwargs: { urls: server.url("/m.onnx"), retries: 0, ...kwargs } })

      // Size known: refused before any byte is written, naming the bytes and the folder.
      server.put("/m.onnx", big)
      const refused = yield* load({})
      expect(refused.error).toMatchObject({ _tag: "InsufficientSpace", needed: big.byteLength })
      expect(refused.error.available).toBeLessThanOrEqual(1024 * 1024)
      expect(refused.error.path).toContain(path.join(cacheDir, "http"))
      expect(refused.cache).toEqual([])

      // Size unknown (chunked): the staging file fills the disk, and the run fails with a typed error.
      server.put("/m.onnx", big, { chunked: true })
      const filled = yield* load({})
      expect(filled.error).toMatchObject({ _tag: "WriteFailed", code: "ENOSPC" })
      expect(filled.free).toBeLessThan(64 * 1024)
      expect(filled.cache.map(([name]: [string]) => name).sort()).toEqual(["m.onnx.partial"])

      // The next run starts on the full disk (nothing it writes first needs room), and a body of
      // unknown size is fetched again whole: the same typed error.
      const again = yield* load({})
      expect(again.error).toMatchObject({ _tag: "WriteFailed", code: "ENOSPC" })
      expect(server.requests("/m.onnx").at(-1)).toMatchObject({ status: 200 })

      // A new version on the server: the old staging file goes first, and the new file fits.
      server.put("/m.onnx", small)
      const done = yield* load({})
      expect(done.error).toBeUndefined()
      expect(done.files).toEqual([{ name: "m.onnx", size: small.byteLength }])
      expect(done.cache.map(([name]: [string]) => name).sort()).toEqual(["m.onnx", "meta.json"])
    }), 60_000)
})

withServers("HttpStorage: options from Config", (it) => {
  it.scoped("layerConfig takes each option as a Config; the default cache folder is read through Config too", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      const cacheDir = yield* tempDir
      const files = yield* Effect.scoped(Effect.flatMap(Storage.Storage, (storage) => storage.load)).pipe(
        Effect.provide(HttpStorage.layerConfig({
          urls: Config.string("MODEL_URL"),
          sha256: Config.string("MODEL_SHA256"),
          needLoadFile: Config.succeed(false)
        }).pipe(Layer.provide(platform))),
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([
          ["MODEL_URL", server.url("/m.onnx")],
          ["MODEL_SHA256", TestServer.sha256(model)],
          ["MLUP_STORAGE_CACHE", cacheDir]
        ])))
      )
      expect(files.map((file) => file._tag === "Path" && file.path.startsWith(cacheDir))).toEqual([true])
      const missing = yield* Effect.flip(
        Effect.scoped(Effect.flatMap(Storage.Storage, (storage) => storage.load)).pipe(
          Effect.provide(HttpStorage.layerConfig({ urls: Config.string("MODEL_URL") }).pipe(Layer.provide(platform))),
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map()))
        )
      )
      expect(missing._tag).toBe("ConfigError")
    }))
})

withServers("HttpStorage: large files in parallel ranged parts", (it) => {
  const MiB = 1024 * 1024
  const big = bytesOf(5 * MiB + 3, 41)
  const parts = { multipartThresholdMb: 1, partSizeMb: 1, partConcurrency: 3 }
  const sha256Of = (bytes: Uint8Array) => crypto.createHash("sha256").update(bytes).digest("hex")

  it.scoped("a file above the threshold comes in ranged parts, each checked with If-Range, and is verified whole", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/big.bin", big)
      const cacheDir = yield* tempDir
      const files = yield* contents(yield* make({ urls: server.url("/big.bin"), cacheDir, sha256: sha256Of(big), ...parts }))
      expect(files.map((file) => file.bytes)).toEqual([fingerprint(big)])
      const requests = server.requests("/big.bin")
      // The first answer told the size and that ranges are served; then the six parts.
      expect(requests[0]!.range).toBeUndefined()
      const ranged = requests.slice(1)
      expect(ranged.map((r) => r.range).sort()).toEqual(
        Array.from({ length: 6 }, (_, i) => `bytes=${i * MiB}-${Math.min(big.length, (i + 1) * MiB) - 1}`).sort()
      )
      expect(ranged.every((r) => r.status === 206 && r.ifRange !== undefined)).toBe(true)
      expect(cacheFiles(cacheDir).sort()).toEqual(["big.bin", "meta.json"])
      // Cached: confirmed by one conditional request.
      yield* contents(yield* make({ urls: server.url("/big.bin"), cacheDir, ...parts }))
      expect(server.requests("/big.bin").at(-1)!.status).toBe(304)
    }))

  it.scoped("an interrupted download resumes the missing parts only; a new version on the server is never mixed in", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/big.bin", big)
      const cacheDir = yield* tempDir
      // The first GET, two parts, then one part that breaks off.
      server.fault("/big.bin", { kind: "none" }, { kind: "none" }, { kind: "none" }, { kind: "drop", after: 1000 })
      const failed = yield* Effect.either(contents(yield* make({ urls: server.url("/big.bin"), cacheDir, retries: 0, ...parts })))
      expect(failed._tag).toBe("Left")
      const firstRun = server.requests("/big.bin").length
      // The next run asks for the parts not yet recorded, and nothing else.
      const files = yield* contents(yield* make({ urls: server.url("/big.bin"), cacheDir, retries: 0, ...parts }))
      expect(files.map((file) => file.bytes)).toEqual([fingerprint(big)])
      const resumed = server.requests("/big.bin").slice(firstRun)
      expect(resumed.every((r) => r.range !== undefined && r.status === 206)).toBe(true)
      const lengthOf = (range: string | undefined) => {
        const [from, to] = (range ?? "").replace("bytes=", "").split("-").map(Number)
        return to! - from! + 1
      }
      const firstParts = server.requests("/big.bin").slice(1, firstRun).filter((r) => r.bytes === lengthOf(r.range))
        .map((r) => r.range)
      expect(firstParts.length).toBeGreaterThanOrEqual(2)
      expect(resumed.map((r) => r.range).filter((range) => firstParts.includes(range))).toEqual([])
      expect(resumed.length).toBe(6 - firstParts.length)

      // Broken off again; then the server gets a new version of the same size.
      const next = bytesOf(big.length, 42)
      const entry = path.join(cacheDir, "http", cache.keyOf(server.url("/big.bin")))
      fs.rmSync(entry, { recursive: true })
      server.fault("/big.bin", { kind: "none" }, { kind: "none" }, { kind: "none" }, { kind: "drop", after: 1000 })
      expect((yield* Effect.either(contents(yield* make({ urls: server.url("/big.bin"), cacheDir, retries: 0, ...parts }))))._tag)
        .toBe("Left")
      server.put("/big.bin", next)
      const fresh = yield* contents(yield* make({ urls: server.url("/big.bin"), cacheDir, retries: 1, ...parts }))
      expect(fresh.map((file) => file.bytes)).toEqual([fingerprint(next)])
    }))

  it.scoped("a server that ignores If-Range and serves a new version mid-download: started over, never spliced", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make({ ignoreIfRange: true })
      server.put("/big.bin", big, { etag: "\"v1\"" })
      const cacheDir = yield* tempDir
      server.fault("/big.bin", { kind: "none" }, { kind: "none" }, { kind: "drop", after: 1000 })
      expect((yield* Effect.either(contents(yield* make({ urls: server.url("/big.bin"), cacheDir, retries: 0, ...parts }))))._tag)
        .toBe("Left")
      const next = bytesOf(big.length, 43)
      server.put("/big.bin", next, { etag: "\"v2\"" })
      const files = yield* contents(yield* make({ urls: server.url("/big.bin"), cacheDir, retries: 1, ...parts }))
      expect(files.map((file) => file.bytes)).toEqual([fingerprint(next)])
    }))

  it.scoped("one stream of a large body, cut off and resumed: hashed behind its writes, verified whole", () =>
    Effect.gen(function*() {
      const large = bytesOf(9 * MiB + 5, 44)
      const server = yield* TestServer.make()
      server.put("/large.bin", large)
      server.fault("/large.bin", { kind: "drop", after: 4 * MiB + 3 })
      const cacheDir = yield* tempDir
      const files = yield* contents(yield* make({
        urls: server.url("/large.bin"),
        cacheDir,
        sha256: sha256Of(large),
        partConcurrency: 1,
        retrySchedule: Schedule.recurs(2)
      }))
      expect(files.map((file) => file.bytes)).toEqual([fingerprint(large)])
      expect(server.requests("/large.bin").map((r) => [r.status, r.range])).toEqual([
        [200, undefined],
        [206, `bytes=${4 * MiB + 3}-${large.byteLength - 1}`]
      ])
    }))

  it.scoped("a server that answers shorter ranges than asked (RFC 9110): the rest is asked for, in parts and in one stream", () =>
    Effect.gen(function*() {
      const cap = 300 * 1024
      const server = yield* TestServer.make({ maxRangeLength: cap })
      server.put("/big.bin", big)
      const files = yield* contents(
        yield* make({ urls: server.url("/big.bin"), cacheDir: yield* tempDir, sha256: sha256Of(big), retries: 0, ...parts })
      )
      expect(files.map((file) => file.bytes)).toEqual([fingerprint(big)])
      const ranged = server.requests("/big.bin").slice(1)
      expect(ranged.every((r) => r.status === 206 && r.bytes <= cap && r.ifRange !== undefined)).toBe(true)
      // Every byte asked for once: each part in pieces, each piece from where the last one ended.
      expect(ranged.reduce((sum, r) => sum + r.bytes, 0)).toBe(big.length)
      expect(ranged.length).toBe(6 * Math.ceil(MiB / cap) - Math.floor((MiB - 3) / cap))

      // One stream, cut off, then resumed from a server that caps each answer.
      const large = bytesOf(9 * MiB + 5, 45)
      const capped = yield* TestServer.make({ maxRangeLength: MiB })
      capped.put("/large.bin", large)
      capped.fault("/large.bin", { kind: "drop", after: MiB / 2 + 3 })
      const resumed = yield* contents(yield* make({
        urls: capped.url("/large.bin"),
        cacheDir: yield* tempDir,
        sha256: sha256Of(large),
        partConcurrency: 1,
        retrySchedule: Schedule.recurs(1)
      }))
      expect(resumed.map((file) => file.bytes)).toEqual([fingerprint(large)])
      const from = MiB / 2 + 3
      expect(capped.requests("/large.bin").map((r) => [r.status, r.range])).toEqual([
        [200, undefined],
        ...Array.from(
          { length: Math.ceil((large.byteLength - from) / MiB) },
          (_, i) => [206, `bytes=${from + i * MiB}-${large.byteLength - 1}`]
        )
      ])
    }))

  it.scoped("part_concurrency 1, a server without ranges or a version: one plain GET", () =>
    Effect.gen(function*() {
      for (const [options, resource] of [
        [{ ...parts, partConcurrency: 1 }, {}],
        [parts, { etag: false as const }]
      ] as const) {
        const server = yield* TestServer.make()
        server.put("/big.bin", big, resource)
        const cacheDir = yield* tempDir
        const files = yield* contents(yield* make({ urls: server.url("/big.bin"), cacheDir, ...options }))
        expect(files.map((file) => file.bytes)).toEqual([fingerprint(big)])
        expect(server.requests("/big.bin").map((r) => [r.status, r.range])).toEqual([[200, undefined]])
      }
    }))
})

withServers("HttpStorage: archives unpacked as they arrive", (it) => {
  // Three files of 4 MiB (random: gzip keeps their size), packed by GNU tar.
  const shards = [bytesOf(4 * 1024 * 1024, 31), bytesOf(4 * 1024 * 1024 + 7, 32), bytesOf(300_000, 33)]
  const packed = archiveOf("tar.gz", { "model/a.bin": shards[0]!, "model/b.bin": shards[1]!, "model/c.bin": shards[2]! })
  const debugLogs = (logs: Array<string>) =>
    Layer.merge(
      Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => logs.push(String(message)))),
      Logger.minimumLogLevel(LogLevel.Debug)
    )

  it.scoped("a tar.gz fetched in ranged parts (one cut off and resumed) is unpacked as it arrives, not read again after", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/model.tar.gz", yield* packed)
      server.fault("/model.tar.gz", { kind: "drop", after: 300_000 })
      const cacheDir = yield* tempDir
      const logs: Array<string> = []
      const files = yield* Effect.flatMap(
        make({ urls: server.url("/model.tar.gz"), cacheDir, unpack: "auto", multipartThresholdMb: 1, partSizeMb: 1, partConcurrency: 4 }),
        contents
      ).pipe(Effect.provide(debugLogs(logs)))
      expect(files.map((file) => [file.name, file.bytes])).toEqual(
        ["a", "b", "c"].map((name, i) => [`model/${name}.bin`, fingerprint(shards[i]!)])
      )
      expect(logs.some((line) => line.includes("was unpacked as it arrived"))).toBe(true)
      expect(server.requests("/model.tar.gz").filter((request) => request.range !== undefined).length).toBeGreaterThan(4)
      // A warm load: neither fetched nor unpacked again.
      const again = yield* Effect.flatMap(make({ urls: server.url("/model.tar.gz"), cacheDir, unpack: "auto" }), contents)
      expect(again).toEqual(files)
      expect(fs.readdirSync(path.join(cacheDir, "unpacked")).filter((name) => name.startsWith("staging-"))).toEqual([])
    }))

  it.scoped("a hostile tar.gz followed as it arrives is ArchiveRefused; an interrupted one leaves nothing unpacked", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      execFileSync("python3", ["-c", String.raw`
import io, os, sys, tarfile
with tarfile.open(sys.argv[1], "w:gz") as tar:
    data = os.urandom(10 * 1024 * 1024)
    info = tarfile.TarInfo("weights.bin"); info.size = len(data); tar.addfile(info, io.BytesIO(data))
    info = tarfile.TarInfo("../../escape.sh"); info.size = 1; tar.addfile(info, io.BytesIO(b"x"))
`, path.join(dir, "evil.tar.gz")])
      const server = yield* TestServer.make()
      server.put("/evil.tar.gz", fs.readFileSync(path.join(dir, "evil.tar.gz")))
      const cacheDir = path.join(dir, "cache")
      const options = { urls: server.url("/evil.tar.gz"), cacheDir, unpack: "auto", multipartThresholdMb: 1, partSizeMb: 1 } as const
      const refused = yield* Effect.flip(Effect.flatMap(make(options), contents))
      expect(refused).toMatchObject({ _tag: "ArchiveRefused", entry: "../../escape.sh", rule: "parent reference" })
      expect(fs.readdirSync(path.join(cacheDir, "unpacked")).filter((name) => name !== "index")).toEqual([])
      expect(fs.existsSync(path.join(dir, "escape.sh"))).toBe(false)

      // Interrupted mid-way (the body stalls after 3 MiB): no staging folder stays.
      const slow = yield* TestServer.make()
      slow.put("/model.tar.gz", yield* packed)
      slow.fault("/model.tar.gz", { kind: "stall", after: 3 * 1024 * 1024 })
      const slowCache = path.join(dir, "slow")
      const fiber = yield* Effect.fork(Effect.flatMap(
        make({ urls: slow.url("/model.tar.gz"), cacheDir: slowCache, unpack: "auto", partConcurrency: 1 }),
        contents
      ))
      yield* Effect.sleep("1500 millis")
      yield* Fiber.interrupt(fiber)
      yield* Effect.sleep("200 millis")
      const left = fs.existsSync(path.join(slowCache, "unpacked")) ? fs.readdirSync(path.join(slowCache, "unpacked")) : []
      expect(left.filter((name) => name.startsWith("staging-"))).toEqual([])
    }))
})

withServers("HttpStorage: watched (Storage.watch)", (it) => {
  it.scoped("each check is one conditional request per URL (a 304): a new version only when the server's ETag and bytes changed", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      const cacheDir = yield* tempDir
      const perCheck = yield* followsItsSource({
        storage: HttpStorage.layer({ urls: server.url("/m.onnx"), cacheDir }).pipe(Layer.provide(Layer.merge(platform, quiet))),
        write: (text) => Effect.sync(() => server.put("/m.onnx", new TextEncoder().encode(text))),
        requests: () => server.requests("/m.onnx").length
      })
      expect(perCheck).toBe(1)
      const statuses = server.requests("/m.onnx").map((request) => request.status)
      expect(statuses.filter((status) => status === 304).length).toBeGreaterThanOrEqual(4)
      expect(statuses.filter((status) => status === 200).length).toBe(2)
    }))
})
