/**
 * Unpacking, for every storage (issue 20): the archives a load delivers
 * (`.tar`, `.tar.gz`/`.tgz`, `.zip`) become the files they hold, which the
 * storage's mask then selects, named by their paths inside the archive.
 *
 * Each archive is unpacked under the rules of `unpack.ts` into a staging
 * folder of the cache, its sha256 computed as it is read; the tree is then
 * renamed into place under that digest (`<cache>/unpacked/<sha256>/tree`),
 * all at once, its files flushed first. A load of an archive it has seen
 * (same file, same identity on disk) finds its digest in an index and uses
 * the tree as it is, once each file's identity is checked: a warm load does
 * not unpack again. Two loads (or processes) that unpack the same archive at
 * once both do the work; the first rename wins and the other's staging goes.
 * Trees no index names any more (the current and the previous digest of
 * each archive, for readers that still use its paths) are removed.
 *
 * @internal
 */
import * as Path from "@effect/platform/Path"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import * as StorageError from "../StorageError.js"
import * as cache from "./cache.js"
import * as mask_ from "./mask.js"
import type * as options_ from "./options.js"
import type * as Schema from "effect/Schema"
import type * as unpack from "./unpack.js"
import * as untar from "./untar.js"
import * as unzip from "./unzip.js"

/** @internal */
export type Kwargs = Schema.Struct.Type<typeof options_.unpackFields>

/** @internal */
export type Format = "tar" | "zip"

// Any case, spelled out: the pattern is also joined to a user's mask, whose flags it must not change.
const archiveNames = /\.(?:[tT][aA][rR](?:\.[gG][zZ])?|[tT][gG][zZ]|[zZ][iI][pP])$/

/** The format a file is read as, under `unpack` (none: delivered as it is). @internal */
export const formatOf = (unpack: Kwargs["unpack"], name: string): Format | undefined => {
  if (unpack === "none") return undefined
  if (unpack === "zip") return "zip"
  if (unpack !== "auto") return "tar"
  if (!archiveNames.test(name)) return undefined
  return /\.zip$/i.test(name) ? "zip" : "tar"
}

/**
 * The mask a storage selects its files with: with unpacking on, the archives
 * (all files, for an explicit format) besides those the mask selects; the
 * mask itself then selects among the archives' files.
 *
 * @internal
 */
export const sourceMask = (unpack: Kwargs["unpack"], mask: RegExp): RegExp => {
  if (unpack === "none") return mask
  const shown = mask_.sourceOf(mask)
  if (unpack !== "auto") return mask_.shownAs(/(?:)/, `every file (unpack: ${unpack})`)
  return mask_.shownAs(
    new RegExp(`(?:${archiveNames.source})|(?:${mask.source})`, mask.flags),
    `${shown} (or an archive: .tar, .tar.gz, .tgz, .zip)`
  )
}

/** A file a load delivers. @internal */
export interface Delivered {
  readonly file: string
  readonly name: string
  readonly size: number
  /** Where it came from, in messages (default: the file). */
  readonly location?: string | undefined
}

/** What an unpacked tree's record holds: each file (not folder) of the tree, with its identity. */
interface TreeRecord {
  readonly version: 1
  readonly files: ReadonlyArray<{ readonly name: string; readonly size: number; readonly identity: string }>
}

/** What the index holds of one archive file: its identity when it was hashed, and its digest. */
interface IndexRecord {
  readonly identity: string
  readonly sha256: string
  /** The digest before this one: its tree stays, for readers that still use its paths. */
  readonly previous?: string | undefined
}

const namesShown = 10

/** The sha256 of a file (a zip's: its reader reads it by ranges, not in order). */
const sha256Of = (file: string) =>
  Effect.async<string, StorageError.ReadFailed>((resume) => {
    const hash = crypto.createHash("sha256")
    const body = fs.createReadStream(file, { highWaterMark: 1024 * 1024 })
    body.on("data", (chunk) => void hash.update(chunk))
    body.on("end", () => resume(Effect.succeed(hash.digest("hex"))))
    body.on("error", (error) => resume(Effect.fail(new StorageError.ReadFailed({ path: file, operation: "read", reason: error.message }))))
    return Effect.sync(() => body.destroy())
  })
/** A staging folder this old is an orphan (its process died). */
const orphanAfterMs = 24 * 60 * 60 * 1000

/**
 * The unpacking stage of one storage: the files a load delivers in, the
 * files to hand over out (archives replaced by the files they hold that the
 * mask selects; other files as they are). With `unpack: "none"`, the files
 * as they are.
 *
 * @internal
 */
export const make = (options: {
  readonly storageType: string
  readonly kwargs: Kwargs
  readonly cacheDir: string
  /** Selects among the archives' files (undefined: all of them). */
  readonly mask: RegExp | undefined
  readonly maskField: string
  readonly verify: cache.VerifyMode
}) => {
  const { kwargs } = options
  const root = path.join(options.cacheDir, "unpacked")
  const limits: unpack.Limits = {
    maxEntries: kwargs.unpack_max_entries,
    maxBytes: kwargs.unpack_max_bytes,
    maxRatio: kwargs.unpack_max_ratio
  }
  const treeOf = (sha256: string) => path.join(root, sha256)
  // One record per archive file and the format it is read as.
  const indexOf = (file: string, format: Format) => path.join(root, "index", `${cache.keyOf(file, format)}.json`)

  // A tree whose record is there and whose every file is as it was made.
  const intact = (sha256: string) =>
    Effect.gen(function*() {
      const record = yield* cache.readJson<TreeRecord>(path.join(treeOf(sha256), "record.json"))
      if (Option.isNone(record) || record.value.version !== 1) return Option.none<TreeRecord>()
      for (const file of record.value.files) {
        const identity = yield* cache.identityOf(path.join(treeOf(sha256), "tree", ...file.name.split("/")))
        if (Option.getOrUndefined(identity) !== file.identity) {
          yield* Effect.logWarning(`The unpacked file ${path.join(treeOf(sha256), "tree", file.name)} changed on disk: unpacking again`)
          return Option.none<TreeRecord>()
        }
      }
      return record
    })

  // An archive into a staging folder: its sha256 (of the bytes read) and the tree's record.
  const unpackInto = (archive: Delivered, format: Format, staging: string, size: number) =>
    Effect.gen(function*() {
      const location = archive.location ?? archive.file
      const folder = path.join(staging, "tree")
      const read = format === "zip"
        ? Effect.zip(sha256Of(archive.file), unzip.unzip({ file: archive.file, folder, limits }))
        : Effect.suspend(() => {
          const hash = crypto.createHash("sha256")
          const body = fs.createReadStream(archive.file, { highWaterMark: 1024 * 1024 })
          body.on("data", (chunk) => void hash.update(chunk))
          return Effect.map(untar.untar({ body, folder, limits, archiveSize: size }), (admitted) => [hash.digest("hex"), admitted] as const)
        })
      const [sha256, admitted] = yield* Effect.catchAll(read, (failure): Effect.Effect<never, StorageError.StorageError> => {
        if (typeof failure !== "object" || failure === null || !("_tag" in failure)) return Effect.fail(failure as StorageError.StorageError)
        switch (failure._tag) {
          case "Refused":
            return Effect.fail(
              new StorageError.ArchiveRefused({
                location,
                ...(failure.refusal.entry === undefined ? {} : { entry: failure.refusal.entry }),
                rule: failure.refusal.rule,
                reason: failure.refusal.reason,
                ...(failure.refusal.limit === undefined ? {} : { limit: failure.refusal.limit })
              })
            )
          case "Broken":
            return Effect.fail(new StorageError.ArchiveUnreadable({ location, format, reason: failure.reason }))
          case "Unwritable":
            return Effect.fail(
              new StorageError.WriteFailed({
                path: folder,
                operation: `unpack ${location} into`,
                reason: failure.reason,
                ...(failure.code === undefined ? {} : { code: failure.code })
              })
            )
          default:
            return Effect.fail(failure as StorageError.StorageError)
        }
      })
      // Every file of the tree (links followed: they stay inside it), with its identity now.
      const files: Array<TreeRecord["files"][number]> = []
      for (const { entry, path: inside } of admitted) {
        if (entry.type === "directory") continue
        const at = path.join(folder, ...inside.split("/"))
        const info = fs.statSync(at, { bigint: true, throwIfNoEntry: false })
        if (info === undefined || !info.isFile()) continue
        files.push({ name: inside, size: Number(info.size), identity: Option.getOrThrow(yield* cache.identityOf(at)) })
      }
      yield* cache.writeJsonAtomic(path.join(staging, "record.json"), { version: 1, files } satisfies TreeRecord)
      return { sha256, record: { version: 1, files } satisfies TreeRecord }
    })

  // One archive's tree: the one its index names when it is intact, else unpacked now and put in place.
  const treeFor = (archive: Delivered, format: Format) =>
    Effect.gen(function*() {
      const location = archive.location ?? archive.file
      const identity = yield* cache.identityOf(archive.file)
      if (Option.isNone(identity)) {
        return yield* new StorageError.ReadFailed({ path: archive.file, operation: "unpack", reason: "the archive is gone" })
      }
      const index = yield* cache.readJson<IndexRecord>(indexOf(archive.file, format))
      if (Option.isSome(index) && index.value.identity === identity.value && options.verify === "changed") {
        const record = yield* intact(index.value.sha256)
        if (Option.isSome(record)) {
          yield* Effect.logDebug(`${location} was unpacked before (sha256 ${index.value.sha256}): not unpacked again`)
          return { sha256: index.value.sha256, record: record.value }
        }
      }
      yield* cache.ensureDir(root)
      const id = `${(yield* Clock.currentTimeMillis).toString(36)}-${crypto.randomUUID().slice(0, 8)}`
      const staging = path.join(root, `staging-${id}`)
      yield* cache.ensureDir(staging)
      const size = Number(identity.value.split(":")[0])
      const made = yield* unpackInto(archive, format, staging, size).pipe(
        Effect.onExit((exit) => exit._tag === "Failure" ? cache.removeAll(staging) : Effect.void)
      )
      // The archive must not have changed while it was read (a file being written by someone else).
      const after = yield* cache.identityOf(archive.file)
      if (Option.getOrUndefined(after) !== identity.value) {
        yield* cache.removeAll(staging)
        return yield* new StorageError.ReadFailed({
          path: archive.file,
          operation: "unpack",
          reason: "the archive changed while it was unpacked: load again once it is complete"
        })
      }
      const final = treeOf(made.sha256)
      const existing = yield* intact(made.sha256)
      if (Option.isSome(existing)) {
        // Unpacked by another load meanwhile (or before, under another name): that tree is used.
        yield* cache.removeAll(staging)
      } else {
        yield* cache.removeAll(final)
        yield* Effect.catchAll(cache.commit(staging, final, { flushed: true }), (error) =>
          // Another load renamed its tree into place first.
          Effect.flatMap(intact(made.sha256), (won) => Option.isSome(won) ? cache.removeAll(staging) : Effect.fail(error)))
      }
      const record = Option.getOrElse(existing, () => made.record)
      const before = Option.getOrUndefined(index)
      yield* cache.ensureDir(path.dirname(indexOf(archive.file, format)))
      yield* cache.writeJsonAtomic(indexOf(archive.file, format), {
        identity: identity.value,
        sha256: made.sha256,
        ...(before !== undefined && before.sha256 !== made.sha256 ? { previous: before.sha256 } : before?.previous === undefined ? {} : { previous: before.previous })
      } satisfies IndexRecord)
      yield* collect
      return { sha256: made.sha256, record }
    })

  // Trees no index names (as current or previous), and orphaned staging folders, go.
  const collect = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const names = yield* Effect.sync(() => fs.readdirSync(root))
    const indexDir = path.join(root, "index")
    const kept = new Set<string>()
    for (const name of yield* Effect.sync(() => (fs.existsSync(indexDir) ? fs.readdirSync(indexDir) : []))) {
      const record = yield* cache.readJson<IndexRecord>(path.join(indexDir, name))
      if (Option.isSome(record)) {
        kept.add(record.value.sha256)
        if (record.value.previous !== undefined) kept.add(record.value.previous)
      }
    }
    const gone = names.filter((name) =>
      name.startsWith("staging-")
        ? now - (fs.statSync(path.join(root, name), { throwIfNoEntry: false })?.mtimeMs ?? now) > orphanAfterMs
        : /^[0-9a-f]{64}$/.test(name) && !kept.has(name)
    )
    yield* cache.removeAll(...gone.map((name) => path.join(root, name)))
  })

  const select = (archive: Delivered, tree: { readonly sha256: string; readonly record: TreeRecord }) =>
    Effect.gen(function*() {
      const names = tree.record.files.map((file) => file.name)
      const chosen = new Set(
        options.mask === undefined
          ? names
          : yield* mask_.select(options.mask, names, { storageType: options.storageType, field: options.maskField })
      )
      if (chosen.size === 0) {
        return yield* new StorageError.NothingMatched({
          folder: `${archive.location ?? archive.file} (unpacked)`,
          mask: mask_.sourceOf(options.mask!),
          names: [...names].sort().slice(0, namesShown),
          entries: names.length
        })
      }
      return tree.record.files
        .filter((file) => chosen.has(file.name))
        .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
        .map((file): Delivered => ({
          file: path.join(treeOf(tree.sha256), "tree", ...file.name.split("/")),
          name: file.name,
          size: file.size,
          location: `${archive.location ?? archive.file}#${file.name}`
        }))
    })

  return (files: ReadonlyArray<Delivered>): Effect.Effect<ReadonlyArray<Delivered>, StorageError.StorageError> =>
    kwargs.unpack === "none"
      ? Effect.succeed(files)
      : Effect.gen(function*() {
        const out: Array<Delivered> = []
        const from = new Map<string, string>()
        for (const file of files) {
          const format = formatOf(kwargs.unpack, file.name)
          const delivered = format === undefined ? [file] : yield* Effect.flatMap(treeFor(file, format), (tree) => select(file, tree))
          for (const one of delivered) {
            const other = from.get(one.name)
            if (other !== undefined) {
              return yield* new StorageError.ArchiveRefused({
                location: file.location ?? file.file,
                entry: one.name,
                rule: "duplicate",
                reason: `${one.name} is delivered twice: by ${other} and by ${file.location ?? file.file}`
              })
            }
            from.set(one.name, file.location ?? file.file)
            out.push(one)
          }
        }
        return out
      })
}

/**
 * The unpacking stage of a storage from its kwargs: the cache folder (the
 * default one when not given) and the verification mode it shares with the
 * cache.
 *
 * @internal
 */
export const stageOf = (
  storageType: string,
  kwargs: Kwargs & { readonly cache_dir?: string | undefined; readonly verify?: cache.VerifyMode | undefined },
  contents: { readonly mask: RegExp | undefined; readonly maskField: string }
) =>
  Effect.gen(function*() {
    if (kwargs.unpack === "none") return (files: ReadonlyArray<Delivered>) => Effect.succeed(files)
    const path_ = yield* Path.Path
    return make({
      storageType,
      kwargs,
      cacheDir: path_.resolve(kwargs.cache_dir ?? (yield* cache.defaultCacheDir(path_))),
      mask: contents.mask,
      maskField: contents.maskField,
      verify: kwargs.verify ?? "changed"
    })
  })
