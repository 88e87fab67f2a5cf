/**
 * The contract every storage passes, for `@effect/vitest` (an optional peer
 * dependency): the built-in storages run it in their own tests, and a custom
 * storage's author runs it in theirs. `storageContract(name, fixture)`
 * declares a `describe` block whose tests check that `load` delivers what the
 * fixture expects, in order and again; that `loadBytesSingleFile` agrees;
 * and that closing the load's scope (after success, failure or interruption)
 * releases every buffer handed out and runs the collector once.
 *
 * Import it as `mlup-storage/testing`.
 *
 * @since 0.4.0
 */
import { describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as GarbageCollector from "./GarbageCollector.js"
import * as LoadedFile from "./LoadedFile.js"
import type * as Storage from "./Storage.js"
import * as internal from "./internal/storage.js"
import type * as StorageError from "./StorageError.js"

/** The digest and length of some bytes: compared instead of the bytes (deep equality on megabytes is slow). */
const fingerprint = (bytes: Uint8Array): string =>
  `${bytes.byteLength} bytes, sha256 ${crypto.createHash("sha256").update(bytes).digest("hex")}`

/**
 * One file `load` must deliver: a model held in memory, or a file (by path
 * or as bytes) with its name and content.
 *
 * @since 0.4.0
 * @category models
 */
export type Expected =
  | { readonly _tag: "Model"; readonly model: unknown }
  | { readonly _tag: "Path" | "Bytes"; readonly name: string; readonly content: Uint8Array }

/**
 * What the contract runs against: a layer that supplies the storage (the
 * contract adds a counting garbage collector), and what `load` delivers.
 *
 * @since 0.4.0
 * @category models
 */
export interface Fixture {
  /** Supplies the storage; the test adds a counting garbage collector. */
  readonly layer: Layer.Layer<Storage.Storage, StorageError.StorageError, GarbageCollector.GarbageCollector>
  /** What `load` must deliver, in order. */
  readonly expected: ReadonlyArray<Expected>
}

const checkFile = (file: LoadedFile.LoadedFile, expected: Expected) => {
  expect(LoadedFile.isLoadedFile(file)).toBe(true)
  expect(file._tag).toBe(expected._tag)
  if (expected._tag === "Model") {
    expect(LoadedFile.isModel(file) && file.model).toBe(expected.model)
    return
  }
  if (file._tag === "Model") throw new Error("unreachable")
  expect(file.name).toBe(expected.name)
  expect(file.size).toBe(expected.content.byteLength)
  if (file._tag === "Path") {
    expect(fingerprint(fs.readFileSync(file.path))).toBe(fingerprint(expected.content))
  } else {
    expect(file.released).toBe(false)
    expect(fingerprint(file.bytes)).toBe(fingerprint(expected.content))
  }
}

/**
 * After the scope closed: every Bytes file is released, its memory detached,
 * and the collector ran once if bytes were handed out (never otherwise).
 */
const checkReleased = (
  files: ReadonlyArray<LoadedFile.LoadedFile>,
  views: ReadonlyArray<Uint8Array>
) =>
  Effect.gen(function*() {
    for (const file of files) {
      if (file._tag !== "Bytes") continue
      expect(file.released).toBe(true)
      expect(() => file.bytes).toThrow(LoadedFile.BytesReleasedError)
      const error = yield* Effect.flip(LoadedFile.getBytes(file))
      expect(error._tag).toBe("BytesReleasedError")
      expect(error.path).toBe(file.path)
    }
    for (const view of views) {
      // A view kept by mistake no longer holds the memory.
      expect(view.byteLength).toBe(0)
      expect(view.buffer.byteLength).toBe(0)
    }
    const gc = yield* GarbageCollector.TestGarbageCollector
    expect(yield* gc.calls).toBe(files.some(LoadedFile.isBytes) ? 1 : 0)
  })

/** The non-empty byte views handed out: each owns its whole ArrayBuffer, so each must be detached. */
const viewsOf = (files: ReadonlyArray<LoadedFile.LoadedFile>): Array<Uint8Array> => {
  const views = files.flatMap((file) => (file._tag === "Bytes" && file.size > 0 ? [file.bytes] : []))
  for (const view of views) expect(view.byteLength).toBe(view.buffer.byteLength)
  return views
}

/**
 * Declares the contract's tests for one storage. The fixture is built anew
 * (in the test's scope) for every test.
 *
 * @example
 * ```ts
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 * import * as NodeStorage from "mlup-storage/node"
 * import { storageContract } from "mlup-storage/testing"
 *
 * // Everything but the collector: the contract gives its own, which counts.
 * storageContract("MyStorage", Effect.succeed({
 *   layer: MyStorage.layer({ greeting: "hi" }).pipe(Layer.provide(NodeStorage.layerRequirements)),
 *   expected: [{ _tag: "Bytes", name: "greeting.txt", content: new TextEncoder().encode("hi") }]
 * }))
 * ```
 *
 * @since 0.4.0
 * @category contract
 */
export const storageContract = (
  name: string,
  fixture: Effect.Effect<Fixture, never, Scope.Scope>
) =>
  describe(`${name}: Storage contract`, () => {
    const run = <A, E>(
      body: (storage: Storage.Service, expected: ReadonlyArray<Expected>) => Effect.Effect<A, E, Scope.Scope | GarbageCollector.TestGarbageCollector>
    ) =>
      Effect.gen(function*() {
        const { expected, layer } = yield* fixture
        const context = yield* Layer.build(Layer.provideMerge(layer, GarbageCollector.layerTest))
        const storage = yield* Effect.provide(internal.Storage, context)
        return yield* Effect.provide(body(storage, expected), context)
      })

    it.scoped("load delivers the expected files, in order", () =>
      run((storage, expected) =>
        Effect.gen(function*() {
          const files = yield* Effect.scoped(Effect.tap(storage.load, (files) => {
            expect(files.length).toBe(expected.length)
            files.forEach((file, i) => checkFile(file, expected[i]!))
          }))
          expect(files.length).toBe(expected.length)
        })
      ))

    it.scoped("two loads deliver the same files in the same order", () =>
      run((storage) =>
        Effect.gen(function*() {
          const describe = (files: ReadonlyArray<LoadedFile.LoadedFile>) =>
            files.map((file) => (file._tag === "Model" ? file.model : `${file._tag}:${file.path}:${file.size}`))
          const first = yield* Effect.scoped(Effect.map(storage.load, describe))
          const second = yield* Effect.scoped(Effect.map(storage.load, describe))
          expect(second).toEqual(first)
        })
      ))

    it.scoped("loadBytesSingleFile hands over each file as load does", () =>
      run((storage, expected) =>
        Effect.scoped(Effect.gen(function*() {
          const files = yield* storage.load
          for (const [i, file] of files.entries()) {
            const single = yield* storage.loadBytesSingleFile(file._tag === "Model" ? "" : file.path)
            checkFile(single, expected[i]!)
          }
        }))
      ))

    it.scoped("closing the scope releases the bytes and runs the collector once (if it handed out bytes)", () =>
      run((storage) =>
        Effect.gen(function*() {
          let views: Array<Uint8Array> = []
          const files = yield* Effect.scoped(Effect.tap(storage.load, (files) => {
            views = viewsOf(files)
          }))
          yield* checkReleased(files, views)
        })
      ))

    it.scoped("a failure inside the scope still releases everything", () =>
      run((storage) =>
        Effect.gen(function*() {
          let files: ReadonlyArray<LoadedFile.LoadedFile> = []
          let views: Array<Uint8Array> = []
          const exit = yield* Effect.exit(Effect.scoped(Effect.gen(function*() {
            files = yield* storage.load
            views = viewsOf(files)
            return yield* Effect.fail("the deserializer failed" as const)
          })))
          // Exactly the caller's failure: an assertion that failed inside the scope (a view
          // that is not the whole buffer it could detach) is a defect, never taken for it.
          expect(Exit.isFailure(exit) ? Cause.squash(exit.cause) : exit).toBe("the deserializer failed")
          expect(files.length).toBeGreaterThan(0)
          yield* checkReleased(files, views)
        })
      ))

    it.scoped("interruption inside the scope still releases everything", () =>
      run((storage) =>
        Effect.gen(function*() {
          const loaded = yield* Deferred.make<ReadonlyArray<LoadedFile.LoadedFile>>()
          const fiber = yield* Effect.fork(Effect.scoped(Effect.gen(function*() {
            const files = yield* storage.load
            yield* Deferred.succeed(loaded, files)
            return yield* Effect.never
          })))
          const files = yield* Deferred.await(loaded)
          const views = viewsOf(files)
          const exit = yield* Fiber.interrupt(fiber)
          expect(Exit.isInterrupted(exit)).toBe(true)
          yield* checkReleased(files, views)
        })
      ))

    it.scoped("a copy made inside the scope outlives it", () =>
      run((storage, expected) =>
        Effect.gen(function*() {
          const copies = yield* Effect.scoped(Effect.map(storage.load, (files) =>
            files.map((file) => (file._tag === "Bytes" ? file.bytes.slice() : undefined))
          ))
          copies.forEach((copy, i) => {
            const want = expected[i]!
            if (copy !== undefined && want._tag !== "Model") expect(fingerprint(copy)).toBe(fingerprint(want.content))
          })
        })
      ))
  })
