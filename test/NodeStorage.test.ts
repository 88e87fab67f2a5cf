import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as path from "node:path"
import * as NodeStorage from "../src/NodeStorage.js"
import * as Storage from "../src/Storage.js"
import { bytesOf, tempDir, writeFiles } from "./helpers.js"

const MiB = 1024 * 1024

describe("NodeStorage", () => {
  it("the collector works without --expose-gc", () => {
    expect(process.execArgv).not.toContain("--expose-gc")
    expect(typeof (globalThis as { gc?: unknown }).gc).toBe("undefined")
    // Runs V8's collector through a context of its own; a second call reuses it.
    Effect.runSync(NodeStorage.garbageCollector.collect)
    Effect.runSync(NodeStorage.garbageCollector.collect)
    expect(typeof (globalThis as { gc?: unknown }).gc).toBe("undefined")
  })

  it.scoped("after the scope, the memory of the bytes is returned, even with a view kept by mistake", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "model.pckl": bytesOf(64 * MiB, 5) })
      yield* NodeStorage.garbageCollector.collect
      const before = process.memoryUsage().arrayBuffers
      let kept: Uint8Array | undefined
      const during = yield* Effect.scoped(Effect.gen(function*() {
        const storage = yield* Storage.Storage
        const [file] = yield* storage.load
        kept = file?._tag === "Bytes" ? file.bytes : undefined
        return process.memoryUsage().arrayBuffers
      })).pipe(Effect.provide(NodeStorage.layerDisk({ pathToFiles: path.join(dir, "model.pckl"), needLoadFile: true })))
      const after = process.memoryUsage().arrayBuffers
      expect(during - before).toBeGreaterThan(60 * MiB)
      expect(kept?.byteLength).toBe(0)
      expect(after - before).toBeLessThan(16 * MiB)
    }))
})
