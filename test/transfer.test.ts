// The transfer engine's pieces on their own: the drains, retries and the cache
// entry's lock (internal/transfer.ts, nodeDrain.ts, cache/lock.ts). Time is the
// Clock's, so a TestClock drives stalls, retries and lock waits without sleeping.
import { describe, expect, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Readable } from "node:stream"
import * as cache from "../src/internal/cache.js"
import * as nodeDrain from "../src/internal/nodeDrain.js"
import * as transfer from "../src/internal/transfer.js"

// Every drain is watched by its load's watcher (progress and stalls).
const loadTracker = Effect.map(transfer.makeTracker, (tracker) => tracker.file("http://127.0.0.1/model.bin", "model.bin"))

describe("the platform-neutral drain, on the Clock", () => {
  it.effect("a body that stops is a stall after stall_timeout of the Clock's time (driven by TestClock, no sleeping)", () =>
    Effect.gen(function*() {
      let written = 0
      const fiber = yield* Effect.fork(transfer.drain({
        body: Stream.concat(Stream.make(new Uint8Array(10)), Stream.never),
        write: (bytes) => Effect.sync(() => void (written += bytes.byteLength)),
        onBytes: () => {},
        progress: yield* loadTracker,
        stallTimeout: Duration.seconds(60)
      }))
      yield* TestClock.adjust("59 seconds")
      expect(fiber.unsafePoll()).toBeNull()
      expect(written).toBe(10)
      yield* TestClock.adjust("2 seconds")
      const stalled = yield* Effect.flip(Fiber.join(fiber))
      expect(stalled).toMatchObject({ stalledSeconds: 60, reason: "no bytes for 60 s" })
    }).pipe(Effect.scoped))
})

describe("the Node drain", () => {
  it.effect("a body that stops is a stall after stall_timeout of the Clock's time (TestClock), into a file and into memory", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mlup-drain-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      // Ten bytes, then silence (the connection stays open).
      const silent = () => {
        const body = new Readable({ read() {} })
        body.push(new Uint8Array(10))
        return body
      }
      const common = { onBytes: () => {}, progress: yield* loadTracker, stallTimeout: Duration.seconds(3) }
      for (
        const drained of [
          nodeDrain.drain({ body: silent(), file: path.join(dir, "partial"), flags: "w", ...common }),
          nodeDrain.drainInto({ body: silent(), into: new Uint8Array(100), ...common })
        ]
      ) {
        const fiber = yield* Effect.fork(drained)
        // The stream's ten bytes arrive on the event loop, then the Clock moves.
        yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 50)))
        yield* TestClock.adjust("2900 millis")
        yield* Effect.promise(() => new Promise((resolve) => setImmediate(resolve)))
        expect(fiber.unsafePoll()).toBeNull()
        yield* TestClock.adjust("300 millis")
        const stalled = yield* Effect.flip(Fiber.join(fiber))
        expect(stalled).toMatchObject({ stalledSeconds: 3, reason: "no bytes for 3 s" })
      }
    }).pipe(Effect.scoped))

  it.live("a body cut off: every byte received is in the file before the failure is told (a resume goes on from there)", () =>
    Effect.gen(function*() {
      const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "mlup-drain-")), "partial")
      const chunk = 256 * 1024
      let sent = 0
      // Sixteen chunks, each as the copy asks for it, then a reset: the write stream still holds some of them.
      const body = new Readable({
        highWaterMark: chunk,
        read() {
          if (sent === 16) return this.destroy(Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }))
          this.push(Buffer.alloc(chunk, sent++))
        }
      })
      const error = yield* Effect.flip(nodeDrain.drain({
        body,
        file,
        flags: "w",
        onBytes: () => {},
        progress: yield* loadTracker,
        stallTimeout: Duration.seconds(60),
        batch: 4 * chunk
      }))
      expect(error).toMatchObject({ _tag: "Retryable", reason: expect.stringContaining(`cut off after ${16 * chunk} bytes`) })
      expect(fs.statSync(file).size).toBe(16 * chunk)
      fs.rmSync(path.dirname(file), { recursive: true })
    }).pipe(Effect.scoped))
})

describe("retries, on the Clock", () => {
  // The storage's retries of one location, a Retry-After of up to a minute honoured.
  const retried = <A>(schedule: ReturnType<typeof transfer.defaultSchedule>, attempt: Effect.Effect<A, transfer.Retryable>) =>
    transfer.retrying({ location: "http://127.0.0.1/model.bin", schedule, maxRetryAfter: Duration.seconds(60), attempt })

  it.effect("a Retry-After is waited for on the Clock's time (TestClock), then the attempt runs again; the last failure names the attempts", () =>
    Effect.gen(function*() {
      let attempts = 0
      const fiber = yield* Effect.fork(retried(
        transfer.defaultSchedule(2),
        Effect.suspend(() => {
          attempts++
          return Effect.fail(new transfer.Retryable({ reason: "HTTP 503", status: 503, retryAfter: 30_000 }))
        })
      ))
      yield* TestClock.adjust("1 millis")
      expect(attempts).toBe(1)
      // The backoff alone would be 250 ms: the server asked for 30 s.
      yield* TestClock.adjust("29 seconds")
      expect(attempts).toBe(1)
      yield* TestClock.adjust("1 second")
      expect(attempts).toBe(2)
      yield* TestClock.adjust("30 seconds")
      expect(attempts).toBe(3)
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error).toMatchObject({ _tag: "TransientFailure", attempts: 3, status: 503 })
    }))

  it.effect("a Retry-After that is an HTTP date is a wait from the Clock's time when the attempt failed (TestClock)", () =>
    Effect.gen(function*() {
      let attempts = 0
      const fiber = yield* Effect.fork(retried(
        transfer.defaultSchedule(1),
        Effect.flatMap(Clock.currentTimeMillis, (now) => {
          attempts++
          // The server asks to come back 20 s from its "now", given as an HTTP date (whole seconds).
          const date = new Date(Math.ceil((now + 20_000) / 1000) * 1000).toUTCString()
          return attempts === 1
            ? Effect.fail(new transfer.Retryable({ reason: "HTTP 503", status: 503, ...transfer.retryAfterOf(date) }))
            : Effect.succeed("bytes")
        })
      ))
      yield* TestClock.adjust("19 seconds")
      expect(attempts).toBe(1)
      yield* TestClock.adjust("1 second")
      expect(attempts).toBe(2)
      expect(yield* Fiber.join(fiber)).toBe("bytes")
      // A date later than allowed fails at once.
      const late = new Date(Date.UTC(2030, 0, 1)).toUTCString()
      const error = yield* Effect.flip(retried(
        transfer.defaultSchedule(3),
        Effect.fail(new transfer.Retryable({ reason: "HTTP 503", ...transfer.retryAfterOf(late) }))
      ))
      expect(error).toMatchObject({ _tag: "TransientFailure", attempts: 1 })
    }))

  it.effect("without Retry-After: exponential from 250 ms with jitter (TestRandom), a success ends it", () =>
    Effect.gen(function*() {
      let attempts = 0
      const fiber = yield* Effect.fork(retried(
        transfer.defaultSchedule(5),
        Effect.suspend(() =>
          ++attempts < 3 ? Effect.fail(new transfer.Retryable({ reason: "connection reset" })) : Effect.succeed("bytes")
        )
      ))
      yield* TestClock.adjust("1 millis")
      expect(attempts).toBe(1)
      // Jitter keeps each delay within 80–120% of 250 ms, then of 500 ms.
      yield* TestClock.adjust("190 millis")
      expect(attempts).toBe(1)
      yield* TestClock.adjust("120 millis")
      expect(attempts).toBe(2)
      yield* TestClock.adjust("610 millis")
      expect(attempts).toBe(3)
      expect(yield* Fiber.join(fiber)).toBe("bytes")
    }))
})

describe("the cache entry's lock, on the Clock", () => {
  // 100 ms of the Clock at a time; between steps, one turn of the event loop lets file IO settle (no timer).
  const driveUntilDone = <A, E>(fiber: Fiber.RuntimeFiber<A, E>) =>
    Effect.gen(function*() {
      for (let step = 0; step < 300 && fiber.unsafePoll() === null; step++) {
        yield* TestClock.adjust("100 millis")
        yield* Effect.promise(() => new Promise((resolve) => setImmediate(resolve)))
      }
    })

  it.scoped("a live holder: the waiter gives up after lock_timeout of the Clock's time (TestClock) and calls it alive", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mlup-lock-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const file = path.join(dir, "lock")
      // Held in this scope: its heartbeat beats every second of the Clock.
      yield* cache.lock(file, { location: "s3://b/m/", timeout: Duration.seconds(60) })
      const waiter = yield* Effect.fork(Effect.scoped(cache.lock(file, { location: "s3://b/m/", timeout: Duration.seconds(5) })))
      yield* driveUntilDone(waiter)
      const error = yield* Effect.flip(Fiber.join(waiter))
      expect(error).toMatchObject({ _tag: "LockTimeout", alive: true, seconds: 5 })
    }).pipe(Logger.withMinimumLogLevel(LogLevel.Error)))

  it.scoped("released: the waiter takes it at once", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mlup-lock-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const file = path.join(dir, "lock")
      const holder = yield* Scope.make()
      yield* Scope.extend(cache.lock(file, { location: "s3://b/m/", timeout: Duration.seconds(60) }), holder)
      const waiter = yield* Effect.fork(Effect.scoped(cache.lock(file, { location: "s3://b/m/", timeout: Duration.seconds(60) })))
      yield* TestClock.adjust("2 seconds")
      expect(waiter.unsafePoll()).toBeNull()
      yield* Scope.close(holder, Exit.void)
      yield* driveUntilDone(waiter)
      expect(yield* Fiber.join(waiter)).toEqual({ waited: true })
    }).pipe(Logger.withMinimumLogLevel(LogLevel.Error)))
})
