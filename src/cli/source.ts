import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import type * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as CliError from "../CliError.js"
import * as MemoryStorage from "../MemoryStorage.js"
import * as Selection from "../Selection.js"
import type * as StorageError from "../StorageError.js"
import * as StorageUri from "../StorageUri.js"

/** @internal */
export interface SourceFlags {
  /** A URI (`s3://…`, `https://…`, `file://…`): the `storage_uri` kwarg. */
  readonly uri: Option.Option<string>
  readonly storageType: Option.Option<string>
  readonly kwargs: Option.Option<string>
  readonly config: Option.Option<string>
  readonly envPrefix: Option.Option<string>
}

/** @internal */
export type SourceError =
  | CliError.CliError
  | StorageError.UnknownStorageType
  | StorageError.InvalidStorageOptions
  | ConfigError.ConfigError

const isRecord = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/**
 * A config file's selection: JSON or YAML (by its extension; YAML otherwise,
 * which also reads JSON), with `storage_type` / `storage_kwargs` at the top
 * level or in mlup's `ml` section.
 *
 * @internal
 */
export const readConfigFile = (
  file: string
): Effect.Effect<Selection.Selection, CliError.ConfigFileError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const fail = (reason: string, cause?: unknown) =>
      new CliError.ConfigFileError({ path: file, reason, ...(cause === undefined ? {} : { cause }) })
    const text = yield* fs.readFileString(file).pipe(
      Effect.mapError((error) =>
        fail(
          error._tag === "SystemError" && error.reason === "NotFound"
            ? "does not exist"
            : `could not be read (${error.message})`,
          error
        )
      )
    )
    const json = path.extname(file).toLowerCase() === ".json"
    // The parser's own message quotes the text around the error, which may hold
    // secrets (secret_access_key, headers): only the line and column are told.
    // yaml is loaded only when a YAML file is read (start-up time).
    const parse: (text: string) => unknown = json
      ? JSON.parse
      : (yield* Effect.promise(() => import("yaml"))).parse
    const parsed = yield* Effect.try({
      try: () => parse(text) as unknown,
      catch: (cause) => fail(`is not valid ${json ? "JSON" : "YAML"}${whereIn(text, cause)}`)
    })
    if (!isRecord(parsed)) return yield* fail("does not hold a mapping (key: value) at its top level")
    const hasOwn = (key: string) => Object.prototype.hasOwnProperty.call(parsed, key)
    let section: Record<string, unknown> = parsed
    let where = "at its top level"
    if (!hasOwn("storage_type") && !hasOwn("storage_kwargs")) {
      if (!hasOwn("ml")) {
        return yield* fail("has no storage_type or storage_kwargs, at its top level or in an ml section (mlup's format)")
      }
      if (!isRecord(parsed["ml"])) return yield* fail("has an ml section that is not a mapping")
      section = parsed["ml"]
      where = "in its ml section"
    }
    const storageType = section["storage_type"]
    const kwargs = section["storage_kwargs"]
    if (storageType !== undefined && storageType !== null && typeof storageType !== "string") {
      return yield* fail(`has a storage_type ${where} that is not a string`)
    }
    if (kwargs !== undefined && kwargs !== null && !isRecord(kwargs)) {
      return yield* fail(`has storage_kwargs ${where} that are not a mapping`)
    }
    return {
      storage_type: typeof storageType === "string" ? storageType : undefined,
      storage_kwargs: isRecord(kwargs) ? kwargs : undefined
    }
  })

/**
 * Where a JSON or YAML parser failed, as " (line L, column C)": never the
 * text itself, which may hold secrets.
 *
 * @internal
 */
export const whereIn = (text: string, cause: unknown): string => {
  const yamlPosition = (cause as { readonly linePos?: ReadonlyArray<{ line: number; col: number }> } | undefined)
    ?.linePos?.[0]
  if (yamlPosition !== undefined) return ` (line ${yamlPosition.line}, column ${yamlPosition.col})`
  const message = cause instanceof Error ? cause.message : ""
  const position = /at position (\d+)/.exec(message)?.[1]
  if (position !== undefined) {
    const before = text.slice(0, Number(position)).split("\n")
    return ` (line ${before.length}, column ${before.at(-1)!.length + 1})`
  }
  return /Unexpected end of JSON input/.test(message) ? " (it ends too early)" : ""
}

const parseKwargsFlag = (text: string): Either.Either<Record<string, unknown>, CliError.InvalidArgument> => {
  const invalid = (reason: string) => Either.left(new CliError.InvalidArgument({ argument: "--kwargs", reason }))
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (cause) {
    return invalid(`is not valid JSON${whereIn(text, cause)}`)
  }
  return isRecord(value) ? Either.right(value) : invalid("is not a JSON object ({\"path_to_files\": \"...\"})")
}

/**
 * The selection the flags describe. Flags win over the config file: the
 * storage type from `--storage-type`, else the file's; the kwargs are the
 * file's with `--kwargs` merged on top. Without any of the three, the
 * library's Config (environment variables) is read. Every problem found in
 * the sources is returned, not only the first one.
 *
 * @internal
 */
export const selectionOf = (
  flags: SourceFlags
): Effect.Effect<Selection.Selection, ReadonlyArray<SourceError>, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    if (
      Option.isNone(flags.uri) && Option.isNone(flags.storageType) && Option.isNone(flags.kwargs) &&
      Option.isNone(flags.config)
    ) {
      return yield* Selection.selectionFromConfig(
        Option.isSome(flags.envPrefix) ? { prefix: flags.envPrefix.value } : undefined
      ).pipe(Effect.mapError((error) => [error]))
    }
    const problems: Array<SourceError> = []
    let fromFile: Selection.Selection = {}
    if (Option.isSome(flags.config)) {
      const read = yield* Effect.either(readConfigFile(flags.config.value))
      if (Either.isLeft(read)) problems.push(read.left)
      else fromFile = read.right
    }
    let fromFlag: Record<string, unknown> = {}
    if (Option.isSome(flags.kwargs)) {
      const parsed = parseKwargsFlag(flags.kwargs.value)
      if (Either.isLeft(parsed)) problems.push(parsed.left)
      else fromFlag = parsed.right
    }
    if (problems.length > 0) return yield* Effect.fail(problems)
    // The URI argument names the storage (and where the files are), unless --storage-type does.
    return {
      storage_type: Option.getOrUndefined(flags.storageType) ??
        (Option.isSome(flags.uri) ? undefined : fromFile.storage_type),
      storage_kwargs: {
        ...fromFile.storage_kwargs,
        ...fromFlag,
        ...(Option.isSome(flags.uri) ? { [StorageUri.kwarg]: flags.uri.value } : {})
      }
    }
  })

/**
 * The selection, validated by the storage's schema without making it, and
 * refused for the memory storage (its model lives in a process's memory).
 *
 * @internal
 */
export const validatedOf = (
  flags: SourceFlags
): Effect.Effect<Selection.Validated, ReadonlyArray<SourceError>, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const selection = yield* selectionOf(flags)
    // With a URI, the storage is the URI's (validate checks that storage_type agrees).
    const uri = selection.storage_kwargs?.[StorageUri.kwarg] !== undefined
    const storageType = selection.storage_type ?? MemoryStorage.storageType
    const definition = uri ? undefined : yield* Selection.resolve(storageType).pipe(Effect.mapError((error) => [error]))
    if (definition === MemoryStorage.definition) {
      return yield* Effect.fail([
        new CliError.InvalidArgument({
          argument: "storage_type",
          reason: `is ${storageType}, whose model lives in a process's memory: name a storage to fetch from ` +
            "(--storage-type disk|http|s3, a config file, or STORAGE_TYPE)"
        })
      ])
    }
    return yield* Selection.validate(selection).pipe(Effect.mapError((error) => [error]))
  })
