// The transfer engine's pieces that run on Effect alone (internal/transfer.ts):
// time is the Clock's, so a TestClock drives them without sleeping.
import { describe, expect, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as transfer from "../src/internal/transfer.js"

describe("the platform-neutral drain, on the Clock", () => {
  const quietTracker: transfer.FileTracker = {
    start: () => Effect.void,
    advance: () => Effect.void,
    cached: () => Effect.void,
    waiting: () => Effect.void,
    finish: () => Effect.void
  }

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
