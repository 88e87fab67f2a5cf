import { describe, expect, it, layer } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as fs from "node:fs"
import * as path from "node:path"
import * as DiskStorage from "../src/DiskStorage.js"
import * as HttpStorage from "../src/HttpStorage.js"
import * as MemoryBudget from "../src/MemoryBudget.js"
import * as Progress from "../src/Progress.js"
import { bytesOf, platform, tempDir } from "./helpers.js"
import * as TestServer from "./servers/http.js"

const MiB = 1024 * 1024

describe("MemoryBudget", () => {
  it.effect("a reservation holds its bytes until its scope closes; more than the whole budget fails at once", () =>
    Effect.gen(function*() {
      const budget = yield* MemoryBudget.make({ bytes: 1000 })
      const scope = yield* Scope.make()
      yield* Scope.extend(budget.reserve(600, { location: "a" }), scope)
      expect(yield* budget.available).toBe(400)
      yield* Scope.close(scope, Exit.void)
      expect(yield* budget.available).toBe(1000)
      const tooLarge = yield* Effect.flip(Effect.scoped(budget.reserve(1001, { location: "s3://b/huge.bin" })))
      expect(tooLarge).toMatchObject({ _tag: "MemoryBudgetExceeded", location: "s3://b/huge.bin", bytes: 1001, budget: 1000 })
      expect(tooLarge.waitedSeconds).toBeUndefined()
      expect(tooLarge.message).toContain("more than the whole memory budget")
    }))

  it.effect("first come, first served: a small reservation that would fit waits behind a large one", () =>
    Effect.gen(function*() {
      const budget = yield* MemoryBudget.make({ bytes: 1000 })
      const order: Array<string> = []
      const holdA = yield* Scope.make()
      yield* Scope.extend(budget.reserve(600, { location: "a" }), holdA)
      const waits: Array<string> = []
      const take = (name: string, bytes: number) =>
        Effect.fork(Effect.scoped(Effect.zipRight(
          budget.reserve(bytes, { location: name, onWait: Effect.sync(() => waits.push(name)) }),
          Effect.zipRight(Effect.sync(() => order.push(name)), Effect.never)
        )))
      const b = yield* take("b", 600)
      yield* TestClock.adjust("1 millis")
      const c = yield* take("c", 100)
      yield* TestClock.adjust("1 millis")
      // c fits in the 400 free bytes, but b came first.
      expect(order).toEqual([])
      expect(waits).toEqual(["b", "c"])
      yield* Scope.close(holdA, Exit.void)
      yield* TestClock.adjust("1 millis")
      expect(order).toEqual(["b", "c"])
      expect(yield* budget.available).toBe(300)
      yield* Fiber.interrupt(b)
      yield* Fiber.interrupt(c)
      expect(yield* budget.available).toBe(1000)
    }))

  it.effect("a wait longer than the timeout fails (on the Clock: TestClock drives it); an interrupted wait leaves the queue", () =>
    Effect.gen(function*() {
      const budget = yield* MemoryBudget.make({ bytes: 1000, timeout: "30 seconds" })
      const hold = yield* Scope.make()
      yield* Scope.extend(budget.reserve(900, { location: "a" }), hold)
      const waiting = yield* Effect.fork(Effect.scoped(budget.reserve(500, { location: "b" })))
      yield* TestClock.adjust("29 seconds")
      expect(waiting.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 second")
      const exit = yield* Fiber.await(waiting)
      expect(exit).toMatchObject({ _tag: "Failure" })
      const error = yield* Effect.flip(waiting)
      expect(error).toMatchObject({ _tag: "MemoryBudgetExceeded", waitedSeconds: 30, bytes: 500 })
      expect(error.message).toContain("Gave up after 30 s")
      // Interrupted while waiting: it takes nothing, and the next waiter is not held behind it.
      const gone = yield* Effect.fork(Effect.scoped(budget.reserve(500, { location: "c" })))
      const next = yield* Deferred.make<void>()
      const after = yield* Effect.fork(Effect.scoped(Effect.zipRight(
        budget.reserve(100, { location: "d" }),
        Effect.zipRight(Deferred.succeed(next, undefined), Effect.never)
      )))
      yield* TestClock.adjust("1 millis")
      yield* Fiber.interrupt(gone)
      yield* Deferred.await(next)
      expect(yield* budget.available).toBe(0)
      yield* Fiber.interrupt(after)
      yield* Scope.close(hold, Exit.void)
      expect(yield* budget.available).toBe(1000)
    }))
})

const quiet = Logger.minimumLogLevel(LogLevel.Error)
layer(Layer.merge(platform, quiet), { excludeTestServices: true })("MemoryBudget with the storages", (it) => {
  it.scoped("four loads of 1 MiB files from the disk at once under a 2.5 MiB budget: never more than two buffers", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      for (let i = 0; i < 4; i++) fs.writeFileSync(path.join(dir, `m${i}.bin`), bytesOf(MiB, i))
      const budget = yield* MemoryBudget.make({ bytes: 2.5 * MiB })
      let peak = 0
      const loadOne = (i: number) =>
        Effect.scoped(Effect.gen(function*() {
          const storage = yield* DiskStorage.make({ pathToFiles: path.join(dir, `m${i}.bin`), fileMask: "bin", needLoadFile: true })
          const [file] = yield* storage.load
          peak = Math.max(peak, budget.bytes - (yield* budget.available))
          yield* Effect.sleep("20 millis")
          return file?._tag === "Bytes" ? file.size : 0
        }))
      const sizes = yield* Effect.forEach([0, 1, 2, 3], loadOne, { concurrency: "unbounded" }).pipe(
        Effect.provideService(MemoryBudget.MemoryBudget, budget)
      )
      expect(sizes).toEqual([MiB, MiB, MiB, MiB])
      expect(peak).toBe(2 * MiB)
      expect(yield* budget.available).toBe(2.5 * MiB)
    }))

  it.scoped("a remote load into memory waits for the budget, says so in its progress, and one larger than the budget fails at once", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.make()
      server.put("/a.bin", bytesOf(2 * MiB, 1))
      server.put("/b.bin", bytesOf(2 * MiB, 2))
      const budget = yield* MemoryBudget.make({ bytes: 3 * MiB })
      const phases: Array<string> = []
      const recorded: Progress.Service = {
        publish: (event) => Effect.sync(() => void phases.push(`${event.name}:${event.phase}`)),
        subscribe: Effect.succeed(Stream.empty)
      }
      const storageOf = (url: string) =>
        HttpStorage.make({ urls: url, needLoadFile: true, cache: false })
      const loadOf = (url: string) =>
        Effect.flatMap(storageOf(url), (storage) => storage.load).pipe(
          Effect.provideService(MemoryBudget.MemoryBudget, budget),
          Effect.provideService(Progress.Progress, recorded)
        )
      // Two loads of 2 MiB under 3 MiB: the second waits until the first one's scope closes.
      const first = yield* Scope.make()
      yield* Scope.extend(loadOf(server.url("/a.bin")), first)
      const second = yield* Effect.fork(Effect.scoped(Effect.map(loadOf(server.url("/b.bin")), (files) => files.length)))
      yield* Effect.repeat(Effect.sync(() => phases.includes("b.bin:waiting")), {
        until: (seen) => seen,
        schedule: Schedule.spaced("10 millis")
      })
      expect(phases).not.toContain("b.bin:fetching")
      yield* Scope.close(first, Exit.void)
      expect(yield* Fiber.join(second)).toBe(1)
      expect(phases.filter((phase) => phase.startsWith("b.bin"))).toEqual(["b.bin:waiting", "b.bin:fetching", "b.bin:done"])
      // One load of both files holds both at once: 4 MiB can never fit in 3, so it fails before any byte.
      const both = yield* Effect.flip(Effect.scoped(Effect.flatMap(
        HttpStorage.make({ urls: [server.url("/a.bin"), server.url("/b.bin")], needLoadFile: true, cache: false }),
        (storage) => storage.load
      )).pipe(Effect.provideService(MemoryBudget.MemoryBudget, budget)))
      expect(both).toMatchObject({ _tag: "MemoryBudgetExceeded", bytes: 4 * MiB, budget: 3 * MiB })
      expect(yield* budget.available).toBe(3 * MiB)
    }))
})
