/**
 * The Hugging Face Hub: the files of a model (or dataset, or space)
 * repository at one commit, delivered through the library's cache by path
 * (laid out as in the repository) or as bytes.
 *
 * - One request resolves the revision (branch, tag or commit) to a commit
 *   and lists that commit's files; every file is then read from that commit,
 *   so a push during a load cannot mix two versions.
 * - LFS files are checked against the sha256 the Hub announces, regular files
 *   against their git blob id; a file that does not match is never delivered.
 * - The token goes to the Hub only: a redirect to its CDN is followed without
 *   it.
 * - The S3 storage's engine: the set is staged whole and published at once
 *   (a snapshot), files unchanged since the last snapshot (same blob) are
 *   linked rather than fetched, large files come as parallel ranged GETs
 *   that resume, one load at a time per repository and revision across
 *   processes, offline mode from the last snapshot.
 *
 * URI: `hf://org/name[@revision][/path]` (`hf://datasets/org/name…` for a
 * dataset, `hf://spaces/…` for a space; a revision with `/` percent-encoded:
 * `@refs%2Fpr%2F1`).
 *
 * @since 0.5.0
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as nodeFs from "node:fs"
import * as os from "node:os"
import * as declare_ from "./internal/declare.js"
import * as hub from "./internal/hub.js"
import * as options_ from "./internal/options.js"
import { Seconds, Secret } from "./internal/options.js"
import * as read_ from "./internal/read.js"
import * as unpacking from "./internal/unpacking.js"
import * as snapshot from "./internal/snapshot.js"
import * as internal from "./internal/storage.js"
import * as StorageError from "./StorageError.js"

/**
 * @since 0.5.0
 * @category constants
 */
export const storageType = "hf"

/**
 * The public Hub.
 *
 * @since 0.5.0
 * @category constants
 */
export const defaultEndpoint = "https://huggingface.co"


const Globs = Schema.Union(Schema.String, Schema.Array(Schema.String))

/**
 * A repository id as the Hub has them: `org/name`, or a bare `name` (the
 * oldest models); letters, digits, `-`, `_`, `.`.
 *
 * @since 0.5.0
 * @category schemas
 */
export const RepoId = Schema.String.pipe(
  Schema.filter((value) =>
    /^(?:[A-Za-z0-9][\w.-]{0,95}\/)?[A-Za-z0-9][\w.-]{0,95}$/.test(value) && !value.includes("..") ||
    "must be a repository id: org/name (letters, digits, -, _, .)"
  )
)

/**
 * `storage_kwargs` of the Hub storage. Unknown keys are rejected.
 *
 * - `repo_id` (required): `org/name`.
 * - `revision` (`main`): a branch, tag or commit.
 * - `repo_type` (`model`): `model`, `dataset` or `space`.
 * - `path_in_repo`: a file (a single file) or a folder of the repository;
 *   default all of it. Names are delivered relative to it.
 * - `allow_patterns` / `ignore_patterns`: globs (one or a list), as
 *   huggingface_hub reads them (Python's fnmatch on the path in the
 *   repository: `*` crosses `/`; `dir/` means everything under dir).
 * - `file_mask`: mlup's regular expression, searched in each name (default:
 *   every file).
 * - `token` (a secret): else `HF_TOKEN`, `HUGGING_FACE_HUB_TOKEN`, or the
 *   file `hf auth login` writes (`HF_TOKEN_PATH`, else `$HF_HOME/token`,
 *   else `~/.cache/huggingface/token`).
 * - `endpoint`: else `HF_ENDPOINT`, else `https://huggingface.co`.
 * - `offline`: else `HF_HUB_OFFLINE`; the last snapshot of this repository
 *   and revision, from the cache only.
 * - `need_load_file` (false), `cache` (true), `cache_dir`, `concurrency` (8),
 *   `multipart_threshold_mb` (64), `part_size_mb` (16), `part_concurrency`
 *   (8), `connect_timeout` (30 s), `stall_timeout` (60 s), `retries` (5),
 *   `lock_timeout` (1800 s), `verify`, `ca_bundle`: as the HTTP storage.
 *
 * @since 0.5.0
 * @category schemas
 */
export const Kwargs = Schema.Struct({
  repo_id: RepoId.annotations({ missingMessage: () => "is missing: give the repository, org/name" }),
  revision: Schema.optionalWith(Schema.String.pipe(Schema.minLength(1, { message: () => "must not be empty" })), {
    default: () => "main"
  }),
  repo_type: Schema.optionalWith(
    Schema.Literal("model", "dataset", "space").annotations({
      message: () => ({ message: "must be model, dataset or space", override: true })
    }),
    { default: () => "model" as const }
  ),
  path_in_repo: Schema.optionalWith(options_.Key, { exact: true }),
  allow_patterns: Schema.optionalWith(Globs, { exact: true }),
  ignore_patterns: Schema.optionalWith(Globs, { exact: true }),
  file_mask: Schema.optionalWith(options_.Mask, { exact: true }),
  token: Schema.optionalWith(Secret, { exact: true }),
  endpoint: Schema.optionalWith(
    Schema.String.pipe(Schema.filter((value) => /^https?:\/\//.test(value) && URL.canParse(value) || "must be an http(s) URL")),
    { exact: true }
  ),
  connect_timeout: Seconds(30),
  ...options_.transferFields
})

/**
 * The Hub storage's kwargs, decoded: a repository, its revision and file patterns, and the remote storages' shared options.
 *
 * @since 0.5.0
 * @category models
 */
export type Kwargs = typeof Kwargs.Type

/**
 * What only code can give the Hub storage: a retry Schedule.
 *
 * @since 0.5.0
 * @category models
 */
export interface Extra extends declare_.WithRetrySchedule {
}

/**
 * Options in code for the Hub: `repoId`, `revision`, … (the kwargs in camelCase) and `Extra`.
 *
 * @since 0.5.0
 * @category models
 */
export type Options = declare_.OptionsOf<typeof Kwargs.Encoded> & Extra

const env = options_.envString

/**
 * The token when the kwargs give none, where huggingface_hub looks: `HF_TOKEN`,
 * `HUGGING_FACE_HUB_TOKEN`, then the file `hf auth login` writes.
 */
const tokenFromEnvironment = Effect.gen(function*() {
  const fromEnv = yield* env("HF_TOKEN")
  if (Option.isSome(fromEnv)) return Option.some(fromEnv.value.trim())
  const legacy = yield* env("HUGGING_FACE_HUB_TOKEN")
  if (Option.isSome(legacy)) return Option.some(legacy.value.trim())
  const home = Option.getOrElse(yield* env("HF_HOME"), () => `${os.homedir()}/.cache/huggingface`)
  const file = Option.getOrElse(yield* env("HF_TOKEN_PATH"), () => `${home}/token`)
  try {
    const token = nodeFs.readFileSync(file, "utf8").trim()
    return token === "" ? Option.none<string>() : Option.some(token)
  } catch {
    return Option.none<string>()
  }
})

const truthy = (value: string) => ["1", "ON", "YES", "TRUE"].includes(value.trim().toUpperCase())

/**
 * A Hub storage from decoded kwargs (and, from code, a retry Schedule).
 *
 * @since 0.5.0
 * @category constructors
 */
export const makeResolved = (
  kwargs: Kwargs,
  retrySchedule?: Schedule.Schedule<unknown, unknown>
): Effect.Effect<internal.Service, StorageError.InvalidStorageOptions, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const token = kwargs.token ?? Option.getOrUndefined(Option.map(yield* tokenFromEnvironment, Redacted.make))
    const endpoint = (kwargs.endpoint ?? Option.getOrElse(yield* env("HF_ENDPOINT"), () => defaultEndpoint)).replace(/\/+$/, "")
    if (!/^https?:\/\//.test(endpoint) || !URL.canParse(endpoint)) {
      return yield* new StorageError.InvalidStorageOptions({
        storageType,
        issues: [new StorageError.OptionIssue({ field: "endpoint", problem: "HF_ENDPOINT must be an http(s) URL" })]
      })
    }
    const offline = kwargs.offline ?? Option.match(yield* env("HF_HUB_OFFLINE"), { onNone: () => false, onSome: truthy })
    const conflicts = options_.deliveryConflicts({ ...kwargs, offline })
    if (conflicts.length > 0) return yield* new StorageError.InvalidStorageOptions({ storageType, issues: conflicts })
    const list = (globs: string | ReadonlyArray<string> | undefined) => (typeof globs === "string" ? [globs] : globs)
    const settings: hub.Settings = {
      endpoint,
      repoId: kwargs.repo_id,
      repoType: kwargs.repo_type,
      revision: kwargs.revision,
      pathInRepo: (kwargs.path_in_repo ?? "").replace(/^\/+/, ""),
      allowPatterns: list(kwargs.allow_patterns),
      ignorePatterns: list(kwargs.ignore_patterns),
      // Every file, unless a mask says otherwise (mlup's default mask, *.pckl, would select nothing on the Hub).
      // With unpacking on, the archives too (the mask selects among their files).
      mask: kwargs.file_mask === undefined ? undefined : unpacking.sourceMask(kwargs.unpack, kwargs.file_mask),
      token,
      caBundle: kwargs.ca_bundle,
      connectTimeout: Duration.seconds(kwargs.connect_timeout),
      ...(yield* snapshot.settingsOf({ ...kwargs, offline }, retrySchedule))
    }
    return yield* read_.remoteStorage(storageType, kwargs, yield* hub.make(settings), {
      mask: kwargs.file_mask,
      maskField: "file_mask"
    })
  })

/**
 * The Hugging Face Hub storage, from one declaration: `make` (bad options:
 * `InvalidStorageOptions`), `layer` (Node's `FileSystem` and `Path` through
 * `NodeStorage.layerHf`, or the application's; requests use node:http),
 * `layerConfig` (options as `Config`s) and `definition` (for a `Selection`).
 *
 * @example
 * ```ts
 * import * as Config from "effect/Config"
 * HfStorage.layerConfig({
 *   repoId: Config.string("MODEL_REPO"),
 *   revision: Config.withDefault(Config.string("MODEL_REVISION"), "main"),
 *   token: Config.option(Config.redacted("HF_TOKEN")).pipe(Config.map(Option.getOrUndefined))
 * })
 * ```
 *
 * @since 0.5.0
 * @category constructors
 */
export const { definition, layer, layerConfig, make }: declare_.Declared<Options, Kwargs> = declare_.declare(storageType, {
  aliases: ["HfStorage", "huggingface", "hugging_face"],
  kwargs: Kwargs,
  extras: ["retrySchedule"],
  build: (kwargs, extra: Extra) => makeResolved(kwargs, extra.retrySchedule)
})

