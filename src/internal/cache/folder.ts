/**
 * The cache folder: where it is, how entries are named, room on its disk.
 *
 * @internal
 */
import type * as Path from "@effect/platform/Path"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as crypto from "node:crypto"
import * as nodeFsSync from "node:fs"
import * as os from "node:os"
import * as StorageError from "../../StorageError.js"
import * as errors from "../errors.js"
import * as options_ from "../options.js"
import { call } from "./durable.js"

/**
 * The cache folder when none is given: `$MLUP_STORAGE_CACHE`, else
 * `$XDG_CACHE_HOME/mlup-storage`, else `~/.cache/mlup-storage`.
 *
 * @internal
 */
export const defaultCacheDir = (path: Path.Path): Effect.Effect<string> =>
  Effect.gen(function*() {
    // Read through Effect's Config (the environment by default), so that an application's
    // ConfigProvider decides; an unreadable value counts as unset.
    const read = options_.envString
    const explicit = yield* read("MLUP_STORAGE_CACHE")
    if (Option.isSome(explicit)) return explicit.value
    const xdg = yield* read("XDG_CACHE_HOME")
    return path.join(Option.getOrElse(xdg, () => path.join(os.homedir(), ".cache")), "mlup-storage")
  })

/**
 * A short, stable, file-name-safe key for a remote location.
 *
 * @internal
 */
export const keyOf = (...parts: ReadonlyArray<string>): string =>
  crypto.createHash("sha256").update(parts.join("\u0000")).digest("hex").slice(0, 32)

/**
 * A name that is safe as a single path segment.
 *
 * @internal
 */
export const safeName = (name: string): string => {
  const cleaned = name.replace(/[/\\\u0000]/g, "_")
  return cleaned === "" || cleaned === "." || cleaned === ".." ? "file" : cleaned
}

/**
 * Fails with `InsufficientSpace` when the folder's file system has fewer than
 * `needed` bytes free (`reclaimable`: bytes the download will free first, a
 * partial file it replaces). Unknown free space (no statfs) passes.
 *
 * @internal
 */
export const ensureSpace = (
  dir: string,
  needed: number,
  reclaimable = 0
): Effect.Effect<void, StorageError.InsufficientSpace> =>
  Effect.gen(function*() {
    if (needed <= 0) return
    const stats = yield* Effect.option(call(() => nodeFsSync.statfsSync(dir)))
    if (Option.isNone(stats)) return
    const available = Number(stats.value.bavail) * Number(stats.value.bsize)
    if (available + reclaimable < needed) {
      return yield* new StorageError.InsufficientSpace({ path: dir, needed, available: available + reclaimable })
    }
  })

/**
 * Makes a folder (and its parents).
 *
 * @internal
 */
export const ensureDir = (dir: string): Effect.Effect<void, StorageError.WriteFailed> =>
  Effect.mapError(call(() => nodeFsSync.mkdirSync(dir, { recursive: true })), errors.writeFailed(dir, "create the folder"))
