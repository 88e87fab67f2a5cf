import { expect, layer } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as HttpStorage from "../src/HttpStorage.js"
import * as Progress from "../src/Progress.js"
import * as Storage from "../src/Storage.js"
import { storageContract } from "./contract.js"
import { bytesOf, contents, filesUnder, fingerprint, platform, tempDir } from "./helpers.js"
import * as TestServer from "./servers/http.js"

const root = path.resolve(import.meta.dirname, "..")
const quiet = Logger.minimumLogLevel(LogLevel.Error)
const model = bytesOf(3 * 1024 * 1024 + 17, 7)
const weights = bytesOf(100_000, 9)

const env = Layer.merge(platform, quiet)
// Live clock: retries, timeouts and the lock's waits are real.
const withServers = layer(env, { excludeTestServices: true })
const make = HttpStorage.make


const cacheFiles = (dir: string) => filesUnder(dir).map((file) => path.basename(file))

const fixture = (needLoadFile: boolean) =>
  Effect.gen(function*() {
    const server = yield* TestServer.make()
    server.put("/models/model.onnx", model)
    server.put("/models/weights.bin", weights, { etag: false, lastModified: "Tue, 24 Nov 2026 10:00:00 GMT" })
    const cacheDir = yield* tempDir
    return {
      layer: HttpStorage.layer({
        urls: [server.url("/models/model.onnx"), server.url("/models/weights.bin")],
        cacheDir,
        needLoadFile
      }).pipe(Layer.provide(Layer.merge(platform, quiet))),
      expected: [
        { _tag: needLoadFile ? "Bytes" as const : "Path" as const, name: "model.onnx", content: model },
        { _tag: needLoadFile ? "Bytes" as const : "Path" as const, name: "weights.bin", content: weights }
      ]
    }
  })

storageContract("HttpStorage (paths)", fixture(false))
storageContract("HttpStorage (bytes)", fixture(true))

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
      server.put("/m.onnx", model)
      server.fault("/m.onnx", { kind: "drop", after: 1024 * 1024 }, { kind: "drop", after: 512 * 1024 })
      const cacheDir = yield* tempDir
      const storage = yield* make({ urls: server.url("/m.onnx"), cacheDir, retrySchedule: fast })
      expect((yield* contents(storage))[0]!.bytes).toBe(fingerprint(model))
      const requests = server.requests("/m.onnx")
      expect(requests.map((r) => r.status)).toEqual([200, 206, 206])
      // Each resume starts where the file on disk ended: after the first, at most the bytes that
      // were in flight when the connection dropped are sent again.
      const starts = requests.slice(1).map((r) => Number(/^bytes=(\d+)-$/.exec(r.range ?? "")?.[1]))
      expect(starts[0]).toBeGreaterThan(0)
      expect(starts[0]).toBeLessThanOrEqual(1024 * 1024)
      expect(starts[1]).toBeGreaterThanOrEqual(starts[0]!)
      expect(starts[1]).toBeLessThanOrEqual(starts[0]! + 512 * 1024)
      expect(requests[1]!.ifRange).toMatch(/^".*"$/)
      const sent = requests.reduce((sum, r) => sum + r.bytes, 0)
      expect(sent).toBeLessThan(model.byteLength + 1024 * 1024)
      expect(cacheFiles(cacheDir)).toEqual(["m.onnx", "meta.json"])
    }))

  it.scoped("a server that ignores Range: the download starts over and still succeeds", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make({ ignoreRange: true })
      server.put("/m.onnx", model)
      server.fault("/m.onnx", { kind: "drop", after: 1024 * 1024 })
      const cacheDir = yield* tempDir
      const storage = yield* make({ urls: server.url("/m.onnx"), cacheDir, retrySchedule: fast })
      expect((yield* contents(storage))[0]!.bytes).toBe(fingerprint(model))
      expect(server.requests("/m.onnx").map((r) => [r.status, r.range !== undefined])).toEqual([
        [200, false],
        [200, true]
      ])
    }))

  it.scoped("500 then success; a wrong Content-Length is retried", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      server.fault("/m.onnx", { kind: "status", status: 500 }, { kind: "status", status: 503 }, { kind: "wrongLength" })
      const cacheDir = yield* tempDir
      const storage = yield* make({ urls: server.url("/m.onnx"), cacheDir, retrySchedule: fast })
      expect((yield* contents(storage))[0]!.bytes).toBe(fingerprint(model))
      // The body ended short of what was announced: the resume asks for the rest. When every byte had
      // reached the disk, the server has nothing left to send (416) and the file is verified and kept.
      const statuses = server.requests("/m.onnx").map((r) => r.status)
      expect(statuses.slice(0, 3)).toEqual([500, 503, 200])
      expect(statuses.length).toBe(4)
      expect([206, 416]).toContain(statuses[3])
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
      server.put("/m.onnx", model)
      server.fault("/m.onnx", { kind: "stall", after: 1000 }, { kind: "stall", after: 1000 })
      const cacheDir = yield* tempDir
      const options = { urls: server.url("/m.onnx"), cacheDir, stallTimeout: "300 millis", retries: 1 } as const
      const error = yield* Effect.flip(contents(yield* make(options)))
      expect(error._tag).toBe("StallTimeout")
      if (error._tag !== "StallTimeout") return
      expect(error).toMatchObject({ seconds: 0.3, attempts: 2 })
      // The partial download stays for the next run, which resumes it.
      expect(cacheFiles(cacheDir).sort()).toEqual(["m.onnx.partial", "partial.json"])
      expect((yield* contents(yield* make(options)))[0]!.bytes).toBe(fingerprint(model))
      expect(server.requests("/m.onnx").at(-1)!.range).toBe("bytes=2000-")
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
      const server = yield* TestServer.make({ chunkSize: 64 * 1024, delayMs: 20 })
      server.put("/m.onnx", model)
      const cacheDir = yield* tempDir
      const storage = yield* make({ urls: server.url("/m.onnx"), cacheDir })
      const fiber = yield* Effect.fork(contents(storage))
      // Wait until bytes are arriving in the staging file.
      yield* Effect.repeat(
        Effect.sync(() => filesUnder(cacheDir).some((file) => file.endsWith(".partial") && fs.statSync(path.join(cacheDir, file)).size > 0)),
        { until: (found) => found, schedule: Schedule.spaced("10 millis") }
      )
      yield* Fiber.interrupt(fiber)
      expect(cacheFiles(cacheDir).sort()).toEqual(["m.onnx.partial", "partial.json"])
      const kept = fs.statSync(path.join(cacheDir, filesUnder(cacheDir).find((file) => file.endsWith(".partial"))!)).size
      expect((yield* contents(storage))[0]!.bytes).toBe(fingerprint(model))
      expect(server.requests("/m.onnx").at(-1)).toMatchObject({ status: 206, range: `bytes=${kept}-` })
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

const runChild = (url: string, cacheDir: string) => {
  const child = spawn(process.execPath, ["--import", "tsx", "test/fixtures/http-child.ts", url, cacheDir], {
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
      const server = yield* TestServer.make({ chunkSize: 64 * 1024, delayMs: 20 })
      server.put("/m.onnx", model)
      const cacheDir = yield* tempDir
      const first = runChild(server.url("/m.onnx"), cacheDir)
      const partialSize = () => {
        const partial = filesUnder(cacheDir).find((file) => file.endsWith(".partial"))
        return partial === undefined ? 0 : fs.statSync(path.join(cacheDir, partial)).size
      }
      yield* Effect.repeat(Effect.sync(partialSize), {
        until: (size) => size >= 512 * 1024,
        schedule: Schedule.spaced("20 millis")
      })
      first.child.kill("SIGKILL")
      expect(yield* Effect.promise(() => first.done)).toEqual({ signal: "SIGKILL" })
      expect(cacheFiles(cacheDir)).toContain("lock")
      const resumedFrom = partialSize()

      const second = runChild(server.url("/m.onnx"), cacheDir)
      const result = yield* Effect.promise(() => second.done)
      expect(result).toEqual({ files: [{ name: "m.onnx", size: model.byteLength, sha256: TestServer.sha256(model) }] })
      const last = server.requests("/m.onnx").at(-1)!
      expect(last.status).toBe(206)
      expect(last.range).toBe(`bytes=${resumedFrom}-`)
      expect(cacheFiles(cacheDir).sort()).toEqual(["m.onnx", "meta.json"])
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
