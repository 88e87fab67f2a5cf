/**
 * The Disk storage (mlup's `mlup.ml.storage.local_disk.DiskStorage`): finds
 * the model's files on the local disk by path and mask, and hands them over by
 * path (`need_load_file: false`, the default) or with their bytes read into
 * memory (`need_load_file: true`).
 *
 * @since 0.1.0
 */
import type * as PlatformError from "@effect/platform/Error"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as definition_ from "./internal/definition.js"
import * as errors from "./internal/errors.js"
import * as listing from "./internal/listing.js"
import * as mask_ from "./internal/mask.js"
import * as options_ from "./internal/options.js"
import * as read_ from "./internal/read.js"
import * as unpacking from "./internal/unpacking.js"
import * as release from "./internal/release.js"
import * as internal from "./internal/storage.js"
import * as LoadedFile from "./LoadedFile.js"
import * as StorageError from "./StorageError.js"

/**
 * @since 0.1.0
 * @category constants
 */
export const storageType = "disk"

/**
 * mlup's full name for this storage, accepted in `storage_type`.
 *
 * @since 0.1.0
 * @category constants
 */
export const mlupStorageType = "mlup.ml.storage.local_disk.DiskStorage"

/**
 * mlup's default mask: `(\w.-_)*.pckl`.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultFileMask: string = mask_.defaultMask

/**
 * Options given in code.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** A file, or a folder that holds the model's files. Relative paths are resolved against the working directory. */
  readonly pathToFiles: string
  /**
   * A regular expression searched (not anchored) in each file name of the
   * folder, or in `pathToFiles` itself when it is a file. A string is read
   * with Python's `re` syntax where it differs (as in mlup configs). Default:
   * `(\w.-_)*.pckl`.
   */
  readonly fileMask?: string | RegExp | undefined
  /** `true`: read each file's bytes into memory; `false` (default): hand over paths only. */
  readonly needLoadFile?: boolean | undefined
  /**
   * Archives become the files they hold, which the mask then selects:
   * `"none"` (default), `"auto"` (by extension: `.tar`, `.tar.gz`, `.tgz`,
   * `.tar.zst`, `.zip`), or a format every selected file is read as. See docs/unpack.md.
   *
   * @since 0.5.0
   */
  readonly unpack?: "none" | "auto" | "tar" | "tar.gz" | "tgz" | "tar.zst" | "zip" | undefined
  /** At most this many entries in an archive (default 100,000). @since 0.5.0 */
  readonly unpackMaxEntries?: number | undefined
  /** At most this many bytes unpacked from an archive (default 1 TiB). @since 0.5.0 */
  readonly unpackMaxBytes?: number | undefined
  /** Unpacked bytes at most this many times the archive's (default 200). @since 0.5.0 */
  readonly unpackMaxRatio?: number | undefined
  /** Where unpacked trees are kept (default `$MLUP_STORAGE_CACHE`, else `~/.cache/mlup-storage`). @since 0.5.0 */
  readonly cacheDir?: string | undefined
}

/**
 * Options after validation.
 *
 * @since 0.1.0
 * @category models
 */
export interface ResolvedOptions {
  readonly pathToFiles: string
  readonly fileMask: RegExp
  readonly needLoadFile: boolean
  /** @since 0.5.0 */
  readonly unpack?: "none" | "auto" | "tar" | "tar.gz" | "tgz" | "tar.zst" | "zip" | undefined
  /** @since 0.5.0 */
  readonly unpackMaxEntries?: number | undefined
  /** @since 0.5.0 */
  readonly unpackMaxBytes?: number | undefined
  /** @since 0.5.0 */
  readonly unpackMaxRatio?: number | undefined
  /** @since 0.5.0 */
  readonly cacheDir?: string | undefined
}

/**
 * A mask string (Python `re` syntax where it differs) decoded into a RegExp.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Mask: Schema.Schema<RegExp, string> = options_.Mask

/**
 * A yes/no option (`need_load_file`, `offline`, `cache`): a boolean, or, from
 * configs written by hand and env files, the text pydantic reads as one:
 * `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`, `t`/`f`, `y`/`n` (any
 * case). mlup's dataclass would take any non-empty text, `"false"` included,
 * as true; this never does: other text is an invalid option.
 *
 * @since 0.4.0
 * @category schemas
 */
export const BooleanFlag: Schema.Schema<boolean, boolean | string> = options_.BooleanFlag

const PathToFiles = Schema.propertySignature(
  Schema.String.pipe(
    Schema.minLength(1, { message: () => "must not be empty" }),
    Schema.filter((value) => !value.includes("\u0000") || "contains a NUL byte, which no path may hold")
  )
).annotations({
  missingMessage: () => "is missing: give the model file, or the folder that holds it"
})

const defaultRegExp = (): RegExp => Either.getOrThrow(mask_.compile(mask_.defaultMask))

// In code a mask is a string (as in kwargs) or a RegExp.
const MaskInCode = Schema.transformOrFail(
  Schema.declare((u): u is string | RegExp => typeof u === "string" || u instanceof RegExp, {
    message: () => "Expected a string or a RegExp"
  }),
  Schema.instanceOf(RegExp),
  {
    strict: true,
    decode: (input, options) =>
      typeof input === "string"
        ? ParseResult.decodeUnknown(Mask)(input, options)
        : ParseResult.succeed(mask_.fromRegExp(input)),
    encode: ParseResult.succeed
  }
)

/**
 * The schema of `Options` (code), decoded into `ResolvedOptions`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const OptionsSchema: Schema.Schema<ResolvedOptions, Options> = Schema.Struct({
  pathToFiles: PathToFiles,
  fileMask: Schema.optionalWith(MaskInCode, { default: defaultRegExp }),
  needLoadFile: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  ...options_.unpackInCode,
  cacheDir: Schema.optional(Schema.String.pipe(Schema.minLength(1)))
})

/**
 * mlup's `storage_kwargs` for this storage: `path_to_files` (required),
 * `file_mask` (mlup's code spells it `files_mask`: both are accepted, not with
 * different values) and `need_load_file`. Unknown keys are rejected.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Kwargs: Schema.Schema<ResolvedOptions, {
  readonly path_to_files: string
  readonly file_mask?: string
  readonly files_mask?: string
  readonly need_load_file?: boolean | string
  readonly unpack?: "none" | "auto" | "tar" | "tar.gz" | "tgz" | "tar.zst" | "zip" | undefined
  readonly unpack_max_entries?: number | undefined
  readonly unpack_max_bytes?: number | undefined
  readonly unpack_max_ratio?: number | undefined
  readonly cache_dir?: string
}> = Schema.transformOrFail(
  Schema.Struct({
    path_to_files: PathToFiles,
    file_mask: Schema.optionalWith(Mask, { exact: true }),
    files_mask: Schema.optionalWith(Mask, { exact: true }),
    need_load_file: Schema.optionalWith(BooleanFlag, { exact: true }),
    ...options_.unpackFields,
    cache_dir: Schema.optionalWith(Schema.String.pipe(Schema.minLength(1)), { exact: true })
  }),
  Schema.typeSchema(OptionsSchema),
  {
    strict: true,
    decode: (kwargs, _, ast) => {
      const { file_mask, files_mask } = kwargs
      if (file_mask !== undefined && files_mask !== undefined && mask_.sourceOf(file_mask) !== mask_.sourceOf(files_mask)) {
        return ParseResult.fail(
          new ParseResult.Pointer(
            "files_mask",
            kwargs,
            new ParseResult.Type(
              ast,
              kwargs,
              `conflicts with file_mask (/${mask_.sourceOf(file_mask)}/ against /${mask_.sourceOf(files_mask)}/): give only one of them`
            )
          )
        )
      }
      return ParseResult.succeed({
        pathToFiles: kwargs.path_to_files,
        fileMask: file_mask ?? files_mask ?? defaultRegExp(),
        needLoadFile: kwargs.need_load_file ?? false,
        unpack: kwargs.unpack,
        unpackMaxEntries: kwargs.unpack_max_entries,
        unpackMaxBytes: kwargs.unpack_max_bytes,
        unpackMaxRatio: kwargs.unpack_max_ratio,
        ...(kwargs.cache_dir === undefined ? {} : { cacheDir: kwargs.cache_dir })
      })
    },
    encode: (options) =>
      ParseResult.succeed({
        path_to_files: options.pathToFiles,
        file_mask: options.fileMask,
        need_load_file: options.needLoadFile,
        unpack: options.unpack ?? "none",
        unpack_max_entries: options.unpackMaxEntries ?? 100_000,
        unpack_max_bytes: options.unpackMaxBytes ?? 2 ** 40,
        unpack_max_ratio: options.unpackMaxRatio ?? 200,
        ...(options.cacheDir === undefined ? {} : { cache_dir: options.cacheDir })
      })
  }
)

/** How many names of a folder a `NothingMatched` error shows. */
const namesShown = 10

/**
 * A Disk storage from options that were already validated.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeResolved = (
  options: ResolvedOptions
): Effect.Effect<internal.Service, never, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    // With unpacking on, the archives too are selected (the mask then selects among their files).
    const mask = unpacking.sourceMask(options.unpack ?? "none", options.fileMask)
    const maskSource = mask_.sourceOf(mask)
    const unpacker = yield* unpacking.unpackerOf({
      unpack: options.unpack ?? "none",
      unpack_max_entries: options.unpackMaxEntries ?? 100_000,
      unpack_max_bytes: options.unpackMaxBytes ?? 2 ** 40,
      unpack_max_ratio: options.unpackMaxRatio ?? 200,
      cache_dir: options.cacheDir
    })
    const unpack = unpacking.stage(unpacker, storageType, { mask: options.fileMask, maskField: "file_mask" })

    const stat = (file: string) => Effect.mapError(fs.stat(file), errors.fromPlatformError(file, "stat"))
    // On Node, a folder is listed without the sort Node's readdir does (see internal/listing).
    const nodeListing = yield* Effect.serviceOption(listing.Listing)
    const namesOf = (folder: string) =>
      Effect.mapError(
        Option.isSome(nodeListing) ? nodeListing.value.names(folder) : fs.readDirectory(folder),
        errors.fromPlatformError(folder, "list")
      )

    const readBytes = read_.readBytes(fs, path)

    const deliver = (
      file: string,
      size: number,
      /** The size was reserved from the MemoryBudget with the other files of the load. */
      reserved = false,
      name = path.basename(file)
    ): Effect.Effect<LoadedFile.LoadedFile, StorageError.StorageError, Scope.Scope> =>
      Effect.flatMap(release.readsBytes(options.needLoadFile), (bytes): Effect.Effect<LoadedFile.LoadedFile, StorageError.StorageError, Scope.Scope> =>
        bytes
          ? readBytes(file, name, { reserved })
          : Effect.succeed(LoadedFile.path({ path: file, name, size })))

    const notAFile = (file: string, type: string) =>
      new StorageError.ReadFailed({
        path: file,
        operation: "load",
        reason: `it is neither a regular file nor a folder (${type})`
      })

    // A matching entry of the folder: a regular file, or a folder (a link to
    // either included), as mlup hands them over; nothing for dangling links and
    // special files.
    const entry = (name: string, folder: string) => {
      const file = path.join(folder, name)
      return stat(file).pipe(
        Effect.map((info) =>
          info.type === "File" || info.type === "Directory"
            ? Option.some({ file, size: info.type === "File" ? Number(info.size) : 0, folder: info.type === "Directory" })
            : Option.none()
        ),
        Effect.catchTag("PathNotFound", () =>
          Effect.as(Effect.logDebug(`Skipping ${errors.cap(file)}: a link to nothing`), Option.none())
        )
      )
    }

    const loadFolder = (folder: string) =>
      Effect.gen(function*() {
        const names = yield* namesOf(folder)
        const matched = (yield* mask_.select(mask, names, { storageType, field: "file_mask" })).sort()
        const found = Option.reduceCompact(
          yield* Effect.forEach(matched, (name) => entry(name, folder), { concurrency: 16 }),
          [] as Array<{ readonly file: string; readonly size: number; readonly folder: boolean }>,
          (files, file) => {
            files.push(file)
            return files
          }
        )
        if (found.length === 0) {
          return yield* new StorageError.NothingMatched({
            folder,
            mask: maskSource,
            names: [...names].sort().slice(0, namesShown),
            entries: names.length
          })
        }
        yield* Effect.logDebug(`Found ${found.length} file(s) in ${errors.cap(folder)} by /${errors.cap(maskSource)}/`)
        return yield* handOver(found, folder)
      })

    // The files found (archives unpacked first, with `unpack`), by path or read into memory.
    const handOver = (
      found: ReadonlyArray<{ readonly file: string; readonly size: number; readonly folder: boolean }>,
      location: string
    ) =>
      Effect.gen(function*() {
        const files = options.unpack === undefined || options.unpack === "none"
          ? found.map((one) => ({ ...one, name: path.basename(one.file) }))
          : [
            ...found.filter((one) => one.folder).map((one) => ({ ...one, name: path.basename(one.file) })),
            ...(yield* unpack(
              found.filter((one) => !one.folder).map((one) => ({ file: one.file, name: path.basename(one.file), size: one.size }))
            )).map((one) => ({ ...one, folder: false }))
          ]
        // The files read into memory are held together: their sizes are reserved at once.
        if (yield* release.readsBytes(options.needLoadFile)) {
          yield* release.reserve(files.reduce((sum, file) => sum + (file.folder ? 0 : file.size), 0), {
            location: files.length === 1 ? files[0]!.file : location
          })
        }
        // A folder (a TensorFlow SavedModel, say) is handed over by its path, whatever need_load_file says:
        // its deserializer reads it.
        return yield* Effect.forEach(files, ({ file, folder, name, size }) =>
          folder
            ? Effect.succeed(LoadedFile.path({ path: file, name, size: 0 }))
            : deliver(file, size, true, name))
      })

    const load = Effect.gen(function*() {
      const target = path.resolve(options.pathToFiles)
      const info = yield* Effect.mapError(fs.stat(target), errors.fromPlatformError(target, "stat", "path_to_files"))
      if (info.type === "Directory") return yield* loadFolder(target)
      if (info.type !== "File") return yield* notAFile(target, info.type)
      // As mlup does: for a single file the mask is searched in the path as given.
      if ((yield* mask_.select(mask, [options.pathToFiles], { storageType, field: "file_mask" })).length === 0) {
        return yield* new StorageError.FileDoesNotMatchMask({ path: options.pathToFiles, mask: maskSource })
      }
      if (options.unpack !== undefined && options.unpack !== "none") {
        return yield* handOver([{ file: target, size: Number(info.size), folder: false }], target)
      }
      return [yield* deliver(target, Number(info.size))]
    })

    const loadBytesSingleFile = (file: string) =>
      Effect.gen(function*() {
        const target = path.resolve(file)
        const info = yield* stat(target)
        // As mlup's load_bytes_single_file: anything that is not a file (a folder) is handed over by its path.
        if (info.type === "Directory") {
          return LoadedFile.path({ path: target, name: path.basename(target), size: 0 })
        }
        if (info.type !== "File") return yield* notAFile(target, info.type)
        return yield* deliver(target, Number(info.size))
      })

    // What may have changed it, for `watch`: file-system events on the folder (all of it: a folder it hands
    // over changes inside), or on a single file's folder (a file replaced by a rename is a new inode). Where
    // events cannot be had (no such folder yet, no inotify watches left), none: `watch` polls.
    //
    // A symbolic link on the way (a version published by switching a link, as git-sync and Kubernetes'
    // volumes do): the events are those of the folder the link led to when the watch began, so the folder
    // holding each link is watched too, and when a link leads elsewhere the watch begins again on where it
    // leads now (the old folder, often removed, tells nothing more).
    const changed: Stream.Stream<FileSystem.WatchEvent, PlatformError.PlatformError> = Stream.unwrap(Effect.gen(function*() {
      const target = path.resolve(options.pathToFiles)
      const info = yield* Effect.option(fs.stat(target))
      const folder = Option.isSome(info) && info.value.type === "Directory"
      const watched = folder ? target : path.dirname(target)
      const events = fs.watch(watched, { recursive: folder })
      const links: Array<string> = []
      for (let at = watched; at !== path.dirname(at); at = path.dirname(at)) {
        if (yield* Effect.isSuccess(fs.readLink(at))) links.push(at)
      }
      if (links.length === 0) return events
      const leadsTo = Effect.map(Effect.option(fs.realPath(watched)), Option.getOrUndefined)
      const before = yield* leadsTo
      const switched = Stream.mergeAll(
        links.map((link) =>
          fs.watch(path.dirname(link)).pipe(Stream.filter((event) => path.basename(event.path) === path.basename(link)))
        ),
        { concurrency: "unbounded" }
      ).pipe(
        Stream.filterEffect(() => Effect.map(leadsTo, (now) => now !== before)),
        Stream.take(1)
      )
      // Ends with the first switch of a link (an event itself), then begins again where the links lead now.
      return Stream.merge(events, switched, { haltStrategy: "right" }).pipe(Stream.concat(Stream.suspend(() => changed)))
    }))
    return yield* internal.make({ storageType, load, loadBytesSingleFile, changed })
  })

/**
 * A Disk storage. Invalid options fail with `InvalidStorageOptions`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options
): Effect.Effect<internal.Service, StorageError.InvalidStorageOptions, FileSystem.FileSystem | Path.Path> =>
  Schema.decodeUnknown(OptionsSchema, { errors: "all", onExcessProperty: "error" })(options).pipe(
    Effect.mapError(errors.fromParseError(storageType, options)),
    Effect.flatMap(makeResolved)
  )

/**
 * The Disk storage as a layer that takes `FileSystem` and `Path` from the
 * application (a test may give its own); it runs on Node (a mask that may
 * backtrack is matched in a worker thread). `NodeStorage.layerDisk` provides
 * Node's.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options
): Layer.Layer<internal.Storage, StorageError.InvalidStorageOptions, FileSystem.FileSystem | Path.Path> =>
  Layer.effect(internal.Storage, make(options))

/**
 * The storage as a layer whose options come from Effect's `Config`: each
 * option a `Config` (`Config.succeed` for a constant), as `PgClient.layerConfig`
 * takes them.
 * A missing or malformed value is a `ConfigError`; options that do not
 * validate are `InvalidStorageOptions`.
 *
 * @example
 * ```ts
 * import * as Config from "effect/Config"
 * DiskStorage.layerConfig({
 *   pathToFiles: Config.string("MODEL_DIR"),
 *   fileMask: Config.withDefault(Config.string("MODEL_MASK"), String.raw`\\.onnx$`),
 *   needLoadFile: Config.succeed(true)
 * })
 * ```
 *
 * @since 0.4.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<
  internal.Storage,
  StorageError.InvalidStorageOptions | ConfigError.ConfigError,
  FileSystem.FileSystem | Path.Path
> => Layer.effect(internal.Storage, Effect.flatMap(Config.unwrap(config), make))

/**
 * @since 0.1.0
 * @category definitions
 */
export const definition: definition_.StorageDefinition<ResolvedOptions> = definition_.define({
  name: storageType,
  aliases: [mlupStorageType, "DiskStorage", "local_disk"],
  kwargs: Kwargs,
  make: makeResolved
})
