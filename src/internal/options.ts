/**
 * What the storages' options have in common: the schemas of their kwargs
 * (secrets, counts, durations, prefixes), the conflicts between mlup's
 * aliases, and the environment read through Effect's `Config`.
 *
 * @internal
 */
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as StorageError from "../StorageError.js"
import * as mask_ from "./mask.js"

/**
 * A mask string (Python `re` syntax where it differs) decoded into a RegExp.
 *
 * @internal
 */
export const Mask: Schema.Schema<RegExp, string> = Schema.transformOrFail(
  Schema.String,
  Schema.instanceOf(RegExp),
  {
    strict: true,
    decode: (source, _, ast) =>
      Either.match(mask_.compile(source), {
        onLeft: (problem) =>
          ParseResult.fail(new ParseResult.Type(ast, source, `is not a valid regular expression (${problem})`)),
        onRight: ParseResult.succeed
      }),
    encode: (regexp) => ParseResult.succeed(mask_.sourceOf(regexp))
  }
)

/**
 * A yes/no option (`need_load_file`, `offline`): a boolean, or, from configs
 * written by hand and env files, the text pydantic reads as one:
 * `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`, `t`/`f`, `y`/`n` (any
 * case). mlup's dataclass would take any non-empty text, `"false"` included,
 * as true; this never does: other text is an invalid option.
 *
 * @internal
 */
export const BooleanFlag: Schema.Schema<boolean, boolean | string> = Schema.Union(
  Schema.Boolean,
  Schema.transformOrFail(Schema.String, Schema.Boolean, {
    strict: true,
    decode: (text, _, ast) => {
      const word = text.trim().toLowerCase()
      if (["true", "yes", "on", "1", "t", "y"].includes(word)) return ParseResult.succeed(true)
      if (["false", "no", "off", "0", "f", "n"].includes(word)) return ParseResult.succeed(false)
      return ParseResult.fail(
        new ParseResult.Type(ast, text, "must be true or false (a boolean, or the text \"true\" / \"false\")")
      )
    },
    encode: (value) => ParseResult.succeed(String(value))
  })
).annotations({ message: () => "must be true or false (a boolean, or the text \"true\" / \"false\")" })

/** A secret: decoded as `Redacted` (from a string, or a `Redacted` given in code). @internal */
export const Secret = Schema.Union(Schema.RedactedFromSelf(Schema.String), Schema.Redacted(Schema.String))

/**
 * When a cached file is hashed again before use: when its identity on disk
 * changed (`"changed"`), or every time (`"always"`).
 *
 * @internal
 */
export const Verify = Schema.Literal("changed", "always").annotations({
  message: () => ({
    message: "must be \"changed\" (re-hash a cached file when it changed on disk) or \"always\"",
    override: true
  })
})

/** A whole number from 1 to `max`. @internal */
export const positiveInt = (max: number) =>
  Schema.Int.pipe(Schema.between(1, max, { message: () => `must be a whole number from 1 to ${max}` }))

/** An optional number of seconds above 0, `fallback` when absent. @internal */
export const Seconds = (fallback: number) =>
  Schema.optionalWith(
    Schema.Number.pipe(Schema.positive({ message: () => "must be a number of seconds above 0" })),
    { default: () => fallback }
  )

/** The longest key (or blob name) the stores take: S3's and GCS's 1,024 bytes of UTF-8. @internal */
export const maxKeyBytes = 1024

/**
 * What is wrong with a key, a prefix or a path inside a repository, before
 * any request names it: a control character (NUL among them), a `.` or `..`
 * segment (which leaves, or repeats, the folder it names), or more bytes than
 * a store takes. `undefined` when nothing is.
 *
 * @internal
 */
export const keyProblem = (key: string): string | undefined => {
  if (/[\u0000-\u001f\u007f]/.test(key)) return "holds a control character (NUL, a newline, …), which no key takes"
  if (key.split("/").some((segment) => segment === "." || segment === "..")) {
    return `has a "." or ".." segment, which would leave the folder it names: give the path without it`
  }
  const bytes = new TextEncoder().encode(key).byteLength
  if (bytes > maxKeyBytes) return `is ${bytes} bytes long; keys are at most ${maxKeyBytes} bytes (UTF-8)`
  return undefined
}

/** A key, a prefix or a path inside a repository, checked by `keyProblem`. @internal */
export const Key = Schema.String.pipe(Schema.filter((value) => keyProblem(value) ?? true))

/**
 * A prefix inside a bucket or container; a URI there (`s3://bucket/prefix`)
 * is refused, never taken as a name.
 *
 * @internal
 */
export const PrefixInside = (what: string, where: string) =>
  Key.pipe(
    Schema.filter((value) =>
      !/^[a-z][a-z0-9+.-]*:\/\//i.test(value) ||
      `is a URI, not a ${what}: give the prefix inside the ${where} (iris/v3/), or the whole URI as storage_uri`
    )
  )

/**
 * mlup's aliases given with different values: `prefix` and `path_to_files`,
 * `file_mask` and `files_mask`.
 *
 * @internal
 */
export const aliasConflicts = (kwargs: {
  readonly prefix?: string | undefined
  readonly path_to_files?: string | undefined
  readonly file_mask?: RegExp | undefined
  readonly files_mask?: RegExp | undefined
}): Array<StorageError.OptionIssue> => [
  ...(kwargs.prefix !== undefined && kwargs.path_to_files !== undefined && kwargs.prefix !== kwargs.path_to_files
    ? [new StorageError.OptionIssue({ field: "path_to_files", problem: "conflicts with prefix: give only one of them" })]
    : []),
  ...(kwargs.file_mask !== undefined && kwargs.files_mask !== undefined &&
      mask_.sourceOf(kwargs.file_mask) !== mask_.sourceOf(kwargs.files_mask)
    ? [new StorageError.OptionIssue({ field: "files_mask", problem: "conflicts with file_mask: give only one of them" })]
    : [])
]

/**
 * A variable of the environment (through Effect's `Config`, so that an
 * application's `ConfigProvider` decides): none when unset, blank or
 * unreadable.
 *
 * @internal
 */
export const envString = (name: string): Effect.Effect<Option.Option<string>> =>
  Effect.map(
    Effect.orElseSucceed(Config.option(Config.string(name)), () => Option.none<string>()),
    Option.filter((value) => value.trim() !== "")
  )

/**
 * `unpack`: `"none"` (archives are delivered as files), `"auto"` (by the
 * name's extension, as KServe's storage initializer does), or a format every
 * file the storage selects is read as (for names that do not tell it).
 *
 * @internal
 */
export const Unpack = Schema.Literal("none", "auto", "tar", "tar.gz", "tgz", "tar.zst", "zip").annotations({
  message: () => ({
    message:
      "must be \"none\", \"auto\" (by extension: .tar, .tar.gz, .tgz, .tar.zst, .zip), \"tar\", \"tar.gz\", \"tgz\", \"tar.zst\" or \"zip\"",
    override: true
  })
})

/**
 * The unpacking options every storage shares (docs/unpack.md): the format,
 * and the limits that refuse a bomb, each named in the error that reaches
 * it, to raise it.
 *
 * @internal
 */
export const unpackFields = {
  unpack: Schema.optionalWith(Unpack, { default: () => "none" as const }),
  unpack_max_entries: Schema.optionalWith(positiveInt(100_000_000), { default: () => 100_000 }),
  unpack_max_bytes: Schema.optionalWith(
    Schema.Number.pipe(
      Schema.int({ message: () => "must be a whole number of bytes above 0" }),
      Schema.positive({ message: () => "must be a whole number of bytes above 0" })
    ),
    { default: () => 2 ** 40 }
  ),
  unpack_max_ratio: Schema.optionalWith(
    Schema.Number.pipe(Schema.greaterThanOrEqualTo(1, { message: () => "must be a number from 1 up" })),
    { default: () => 200 }
  )
}

/** The unpacking options as code gives them (each optional: the defaults of `unpackFields`). @internal */
export const unpackInCode = {
  unpack: Schema.optional(Unpack),
  unpackMaxEntries: Schema.optional(unpackFields.unpack_max_entries.from),
  unpackMaxBytes: Schema.optional(unpackFields.unpack_max_bytes.from),
  unpackMaxRatio: Schema.optional(unpackFields.unpack_max_ratio.from)
}

/**
 * The options every remote storage shares (delivery, the cache, parallelism,
 * parts, timeouts, retries, the lock, verification, CAs), with one set of bounds and
 * defaults, spread into each storage's kwargs schema.
 *
 * @internal
 */
export const transferFields = {
  need_load_file: Schema.optionalWith(BooleanFlag, { default: () => false }),
  // Unset: false (the Hub reads HF_HUB_OFFLINE then).
  offline: Schema.optionalWith(BooleanFlag, { exact: true }),
  cache_dir: Schema.optionalWith(Schema.String.pipe(Schema.minLength(1)), { exact: true }),
  concurrency: Schema.optionalWith(positiveInt(64), { default: () => 8 }),
  multipart_threshold_mb: Schema.optionalWith(positiveInt(1024 * 1024), { default: () => 64 }),
  part_size_mb: Schema.optionalWith(positiveInt(5120), { default: () => 16 }),
  part_concurrency: Schema.optionalWith(positiveInt(64), { default: () => 8 }),
  stall_timeout: Seconds(60),
  retries: Schema.optionalWith(
    Schema.Int.pipe(Schema.between(0, 100, { message: () => "must be a whole number from 0 to 100" })),
    { default: () => 5 }
  ),
  lock_timeout: Seconds(1800),
  verify: Schema.optionalWith(Verify, { default: () => "changed" as const }),
  cache: Schema.optionalWith(BooleanFlag, { default: () => true }),
  ca_bundle: Schema.optionalWith(Schema.String.pipe(Schema.minLength(1)), { exact: true }),
  ...unpackFields
}

/** The shared options, decoded. @internal */
export type TransferKwargs = Schema.Struct.Type<typeof transferFields>

/**
 * Where a remote storage delivers, and what contradicts it: `cache: false`
 * (with which nothing is unpacked: trees are kept in the cache)
 * delivers each file straight into memory (it needs `need_load_file: true`:
 * a path needs a file on disk, which the cache is) and keeps nothing on disk
 * (so `offline`, which reads the cache, cannot go with it).
 *
 * @internal
 */
export const deliveryConflicts = (kwargs: {
  readonly cache: boolean
  readonly need_load_file: boolean
  readonly offline?: boolean | undefined
  readonly unpack?: string | undefined
}): Array<StorageError.OptionIssue> => [
  ...(!kwargs.cache && kwargs.unpack !== undefined && kwargs.unpack !== "none"
    ? [
      new StorageError.OptionIssue({
        field: "unpack",
        problem: "unpacks into the cache, which cache: false turns off: give only one of them"
      })
    ]
    : []),
  ...(!kwargs.cache && !kwargs.need_load_file
    ? [
      new StorageError.OptionIssue({
        field: "cache",
        problem: "is false, which loads the files into memory without the disk: set need_load_file: true too " +
          "(a path needs a file on disk, and the cache is where it would be)"
      })
    ]
    : []),
  ...(!kwargs.cache && kwargs.offline === true
    ? [
      new StorageError.OptionIssue({
        field: "offline",
        problem: "reads the cache, which cache: false turns off: give only one of them"
      })
    ]
    : [])
]
