// Storage.watch on the test's clock against real sources: the watch sleeps on a TestClock (the test
// moves it), its checks run against the real files and servers started by the tests.
import { expect } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as TestContext from "effect/TestContext"
import * as fs from "node:fs"
import * as Storage from "../src/Storage.js"

/**
 * Runs `self` on a TestClock of its own. (A test after an `@effect/vitest`
 * `layer(...)` block in the same file otherwise shares that block's test
 * services, its clock included: the sleeps other tests left on it confuse
 * the waits below.)
 */
export const onItsOwnClock = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.provide(self, Layer.fresh(TestContext.TestContext))

/**
 * Waits (on the real clock) until something sleeps on the TestClock until a
 * time between `least` and `most` from now; succeeds with that time.
 */
export const sleepingBetween = (least: Duration.DurationInput, most: Duration.DurationInput) =>
  Effect.gen(function*() {
    const [from, to] = [Duration.toMillis(least), Duration.toMillis(most)]
    for (let i = 0; ; i++) {
      const now = yield* Clock.currentTimeMillis
      const sleeps = Chunk.toReadonlyArray(yield* TestClock.sleeps())
      const found = sleeps.find((deadline) => deadline >= now + from && deadline <= now + to)
      if (found !== undefined) return found
      if (i === 4000) throw new Error(`nothing sleeps for ${from} to ${to} ms (now ${now}; sleeps until ${sleeps.join(", ")})`)
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 5)))
    }
  })

// Far from the engine's own sleeps on the clock (the lock's 1 s heartbeat, progress every 250 ms, the
// 30 s stall watchdog of each load).
const interval = Duration.seconds(100)
const settle = Duration.seconds(3)
// Until the watch sleeps for its interval (±10% jitter) or its settling; then the clock is moved to the
// end of that sleep exactly, so the next check starts at the time the watch meant.
const pause = Effect.flatMap(sleepingBetween(Duration.times(interval, 0.9), Duration.times(interval, 1.1)), TestClock.setTime)
const settling = Effect.flatMap(sleepingBetween(settle, settle), TestClock.setTime)

/**
 * What every remote source must do when watched: the first version at once;
 * three intervals with no change give no version, and cost `requests()`
 * (the source's own count of what it answered) the same each; a change
 * (`write`) is the next version, whole. Returns the requests per check.
 */
export const followsItsSource = (options: {
  readonly storage: Layer.Layer<Storage.Storage, unknown>
  readonly write: (text: string) => Effect.Effect<void, unknown>
  readonly requests: () => number
}): Effect.Effect<number, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    yield* options.write("version one")
    const versions = yield* Queue.unbounded<ReadonlyArray<string>>()
    yield* Storage.watch({ interval, settle }).pipe(
      Stream.runForEach((version) =>
        Queue.offer(
          versions,
          version.files.map((file) =>
            file._tag === "Path" ? fs.readFileSync(file.path, "utf8") : file._tag === "Bytes" ? Buffer.from(file.bytes).toString() : "model"
          )
        )
      ),
      Effect.provide(options.storage),
      Effect.forkScoped
    )
    // The first version: checked at once, and again once it held still.
    yield* settling
    expect(yield* Queue.take(versions)).toEqual(["version one"])

    // Three intervals, nothing changed: no version, the same few requests each.
    const costs: Array<number> = []
    for (let i = 0; i < 3; i++) {
      const at = options.requests()
      yield* pause
      // This check is done once the watch sleeps again.
      yield* sleepingBetween(Duration.times(interval, 0.9), Duration.times(interval, 1.1))
      costs.push(options.requests() - at)
    }
    expect(yield* Queue.size(versions)).toBe(0)
    expect(new Set(costs).size).toBe(1)

    // A change: seen at the next interval, delivered once it held still.
    yield* options.write("version two")
    yield* pause
    yield* settling
    expect(yield* Queue.take(versions)).toEqual(["version two"])
    return costs[0]!
  }).pipe(onItsOwnClock)
