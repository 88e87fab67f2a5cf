// The transfer engine's pieces that run on Effect alone (internal/transfer.ts):
// time is the Clock's, so a TestClock drives them without sleeping.
import { describe, expect, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Readable } from "node:stream"
import * as nodeDrain from "../src/internal/nodeDrain.js"
import * as transfer from "../src/internal/transfer.js"

const quietTracker: transfer.FileTracker = {
  start: () => Effect.void,
  advance: () => Effect.void,
  cached: () => Effect.void,
  waiting: () => Effect.void,
  finish: () => Effect.void
}

describe("the platform-neutral drain, on the Clock", () => {
  it.effect("a body that stops is a stall after stall_timeout of the Clock's time (driven by TestClock, no sleeping)", () =>
    Effect.gen(function*() {
      let written = 0
      const fiber = yield* Effect.fork(transfer.drain({
        body: Stream.concat(Stream.make(new Uint8Array(10)), Stream.never),
        write: (bytes) => Effect.sync(() => void (written += bytes.byteLength)),
        onBytes: () => {},
        progress: quietTracker,
        stallTimeout: Duration.seconds(60)
      }))
      yield* TestClock.adjust("59 seconds")
      expect(fiber.unsafePoll()).toBeNull()
      expect(written).toBe(10)
      yield* TestClock.adjust("2 seconds")
      const stalled = yield* Effect.flip(Fiber.join(fiber))
      expect(stalled).toMatchObject({ stalledSeconds: 60, reason: "no bytes for 60 s" })
    }))
})

describe("the Node drain", () => {
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
        progress: quietTracker,
        stallTimeout: Duration.seconds(60),
        highWaterMark: 4 * chunk
      }))
      expect(error).toMatchObject({ _tag: "Retryable", reason: expect.stringContaining(`cut off after ${16 * chunk} bytes`) })
      expect(fs.statSync(file).size).toBe(16 * chunk)
      fs.rmSync(path.dirname(file), { recursive: true })
    }))
})
