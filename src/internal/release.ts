import * as Effect from "effect/Effect"
import { MemoryBudget } from "../MemoryBudget.js"
import type { MemoryBudgetExceeded } from "../StorageError.js"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as Scope from "effect/Scope"

/**
 * What the `load` running on this fiber (and the fibers it forks) has handed
 * out that its scope must release. Set by `Storage.make` around each call.
 *
 * @internal
 */
export interface LoadTracker {
  buffers: number
}

/** @internal */
export const currentLoad: FiberRef.FiberRef<LoadTracker | undefined> = FiberRef.unsafeMake<LoadTracker | undefined>(
  undefined
)

/**
 * Set while `watch` checks a storage for a change: the files a load would read
 * into memory (`need_load_file`) are handed over by path instead (the file on
 * the disk or in the cache), so that a check costs no memory and no budget;
 * `byPath` tells the watch that a delivery must load them again. Files that
 * have no path (the cache off) are read as always.
 *
 * @internal
 */
export const checking: FiberRef.FiberRef<{ byPath: boolean } | undefined> = FiberRef.unsafeMake<
  { byPath: boolean } | undefined
>(undefined)

/**
 * Whether this load reads its files into memory: `need_load_file`, unless it
 * runs as a `watch`'s check.
 *
 * @internal
 */
export const readsBytes = (needLoadFile: boolean): Effect.Effect<boolean> =>
  needLoadFile
    ? Effect.map(FiberRef.get(checking), (check) => {
      if (check === undefined) return true
      check.byPath = true
      return false
    })
    : Effect.succeed(false)

/**
 * Counts one buffer that the current load's scope will release.
 *
 * @internal
 */
export const track: Effect.Effect<void> = Effect.flatMap(FiberRef.get(currentLoad), (tracker) =>
  Effect.sync(() => {
    if (tracker !== undefined) tracker.buffers++
  }))

/**
 * Whether `bytes` is the only view of its whole ArrayBuffer, so that detaching
 * the ArrayBuffer frees exactly these bytes. Pooled slabs (small Buffers from
 * `fs.readFileSync` or `Buffer.from`) share their ArrayBuffer with other
 * Buffers and must never be detached.
 *
 * @internal
 */
export const ownsWholeBuffer = (bytes: Uint8Array): boolean =>
  bytes.buffer instanceof ArrayBuffer &&
  bytes.byteOffset === 0 &&
  bytes.byteLength === bytes.buffer.byteLength &&
  bytes.buffer.byteLength > 0

/**
 * Detaches the ArrayBuffer behind `bytes` when it owns it whole: every view of
 * it (a Buffer kept by mistake included) becomes empty and its memory can be
 * reclaimed by the next collection. Safe to call twice.
 *
 * @internal
 */
export const detach = (bytes: Uint8Array): void => {
  if (ownsWholeBuffer(bytes)) {
    // The transferred copy is dropped at once: nothing holds the memory any more.
    structuredClone(bytes.buffer, { transfer: [bytes.buffer as ArrayBuffer] })
  }
}

/**
 * Reserves `bytes` from the `MemoryBudget` until the scope closes. A load
 * reserves the size of all the files it will hold at once, before the first
 * buffer, so that loads wait for each other whole (a load that took part of
 * the budget and waits for the rest could wait forever).
 *
 * @internal
 */
export const reserve = (
  bytes: number,
  options: { readonly location: string; readonly onWait?: Effect.Effect<void> | undefined }
): Effect.Effect<void, MemoryBudgetExceeded, Scope.Scope> =>
  Effect.flatMap(MemoryBudget, (budget) => budget.reserve(bytes, options))

/**
 * A buffer of exactly `size` bytes, not pooled (so it may be detached), whose
 * memory is released when the scope closes.
 *
 * @internal
 */
export const allocateScoped = (size: number): Effect.Effect<Uint8Array, never, Scope.Scope> =>
  Effect.acquireRelease(
    // An ArrayBuffer of its own; large ones come zeroed from the OS page by page, at no extra cost.
    Effect.zipRight(track, Effect.sync(() => new Uint8Array(size))),
    (bytes) => Effect.sync(() => detach(bytes))
  )

/**
 * Runs `effect` in a scope of its own, forked from the caller's: what it
 * acquires is released with the caller's scope when it succeeds, and at once
 * when it fails or is interrupted (a buffer half filled, the budget it took).
 *
 * @internal
 */
export const keptOnSuccess = <A, E, R>(
  effect: Effect.Effect<A, E, R | Scope.Scope>
): Effect.Effect<A, E, Exclude<R, Scope.Scope> | Scope.Scope> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(Effect.scope, (outer) =>
      Effect.flatMap(Scope.fork(outer, ExecutionStrategy.sequential), (own) =>
        restore(Scope.extend(effect, own)).pipe(
          Effect.onExit((exit) => Exit.isFailure(exit) ? Scope.close(own, exit) : Effect.void)
        )))
  )
