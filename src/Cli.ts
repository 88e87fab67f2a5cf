/**
 * The `mlup-storage` command line, built with `@effect/cli` on the library's
 * own storages: `fetch` delivers a model to a folder (a storage initializer
 * for deploy scripts and init containers), `check` validates a selection
 * without fetching.
 *
 * Not exported by the package's index (it needs `@effect/cli`): import it as
 * `mlup-storage/Cli`. The `mlup-storage` binary runs `run` on Node.
 *
 * @since 0.3.0
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as ValidationError from "@effect/cli/ValidationError"
import * as Options from "@effect/cli/Options"
import type * as CliApp from "@effect/cli/CliApp"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import * as FileSystem from "@effect/platform/FileSystem"
import * as CliError from "./CliError.js"
import * as follow_ from "./cli/follow.js"
import * as place from "./cli/place.js"
import * as errorsInternal from "./internal/errors.js"
import * as progressView from "./cli/progress.js"
import * as source from "./cli/source.js"
import * as Progress from "./Progress.js"
import type * as Storage from "./Storage.js"
import type * as StorageError from "./StorageError.js"

/**
 * The version `mlup-storage --version` prints (the package's).
 *
 * @since 0.3.0
 * @category constants
 */
export const version = "0.4.0"

/**
 * The exit codes of `mlup-storage`, one per kind of failure a deploy script
 * may want to tell apart.
 *
 * @since 0.3.0
 * @category exit codes
 */
export const ExitCode = {
  /** Everything was delivered (or, for `check`, the configuration is valid). */
  Success: 0,
  /** Anything else: an unexpected failure (a bug: please report it). */
  Failure: 1,
  /** Invalid configuration: flags, config file, environment, storage options. */
  InvalidConfiguration: 2,
  /** The files are not where the configuration says: path, URL, bucket, key, mask. */
  NotFound: 3,
  /** The server or the file system refused the credentials or the access. */
  Unauthorized: 4,
  /** The network failed after the retries (or stalled, or the server kept rejecting). */
  NetworkFailure: 5,
  /** The bytes are not the expected ones (checksum mismatch), or an archive was refused as unsafe or could not be read. */
  IntegrityFailure: 6,
  /** Writing to the cache or the target folder failed (space, permissions). */
  WriteFailed: 7,
  /** Another process held the cache entry's lock past `lock_timeout` (its heartbeat says it is alive). */
  Busy: 8,
  /** The server's TLS certificate was not accepted (give the CA that signs it). */
  TlsFailure: 9,
  /** Interrupted by SIGINT (Ctrl-C): nothing partial in the target; a partial download stays in the cache and resumes. */
  Interrupted: 130,
  /** Terminated by SIGTERM (a container being stopped): as SIGINT. */
  Terminated: 143
} as const

/**
 * @since 0.3.0
 * @category exit codes
 */
export type ExitCode = typeof ExitCode[keyof typeof ExitCode]

/**
 * Every error `run` handles: the storages', the command line's, and Config's.
 *
 * @since 0.3.0
 * @category models
 */
export type Failure = StorageError.StorageError | CliError.CliError | source.SourceError

/**
 * The exit code for an error, by its tag.
 *
 * @since 0.3.0
 * @category exit codes
 */
export const exitCodeOf = (error: Failure): ExitCode => {
  switch (error._tag) {
    case "InvalidStorageOptions":
    case "UnknownStorageType":
    case "ConfigFileError":
    case "InvalidArgument":
    case "ConfigError":
      return ExitCode.InvalidConfiguration
    case "PathNotFound":
    case "FileDoesNotMatchMask":
    case "NothingMatched":
    case "RemoteNotFound":
    case "NotCached":
      return ExitCode.NotFound
    case "PermissionDenied":
    case "Unauthorized":
      return ExitCode.Unauthorized
    case "TransientFailure":
    case "StallTimeout":
    case "RequestRejected":
      return ExitCode.NetworkFailure
    case "ChecksumMismatch":
    case "ArchiveRefused":
    case "ArchiveUnreadable":
      return ExitCode.IntegrityFailure
    case "WriteFailed":
    case "InsufficientSpace":
      return ExitCode.WriteFailed
    case "LockTimeout":
      return ExitCode.Busy
    case "TlsFailure":
      return ExitCode.TlsFailure
    case "ReadFailed":
    case "MemoryBudgetExceeded":
      return ExitCode.Failure
  }
}

const hints: Record<number, string> = {
  [ExitCode.InvalidConfiguration]:
    "Fix the configuration (--storage-type, --kwargs, --config or the STORAGE_* variables); `mlup-storage check` lists every problem.",
  [ExitCode.NotFound]: "Check the path, URL, bucket or prefix, and that file_mask matches the files' names.",
  [ExitCode.Unauthorized]:
    "Check the credentials (headers, access keys) or the permissions; the values are never printed.",
  [ExitCode.IntegrityFailure]:
    "The bytes do not match the expected checksum (the bad file was removed), or an archive was refused as unsafe or " +
    "could not be read (nothing of it was kept): check the sha256 option and the source; a limit it reached names the " +
    "option that raises it (unpack_max_*).",
  [ExitCode.TlsFailure]:
    "Give the CA that signs the server's certificate: ca_bundle in the kwargs, or SSL_CERT_FILE / AWS_CA_BUNDLE / NODE_EXTRA_CA_CERTS (a PEM file).",
  [ExitCode.Busy]:
    "Another process is fetching the same files into this cache: wait for it, raise lock_timeout, or use another cache_dir."
}

/** The hint for an error: by its exit code, or by its tag where one code covers several causes. */
const hintOf = (error: Failure, code: ExitCode, resumable: boolean): string | undefined => {
  switch (error._tag) {
    case "TransientFailure":
    case "StallTimeout":
      return "The server could not be reached or kept failing: retry later, or raise retries / stall_timeout. " +
        (resumable
          ? "The partial download stays in the cache, and the next run resumes it."
          : "Nothing was kept (--no-cache): the next run starts over.")
    case "RequestRejected":
      return "The server rejected the request (retrying will not help): check the URL and the headers."
    case "InsufficientSpace":
      return "Free space in the folder named above, or point cache_dir (or --to) at a larger disk."
    case "WriteFailed":
      return "Check the free space and the permissions of the folder named above."
    case "LockTimeout":
      return error.alive === false
        ? "The lock's holder shows no sign of life: raise lock_timeout above the time after which a lock is taken over, " +
          "or remove the lock file named above if no process is fetching."
        : hints[code]
    default:
      return hints[code]
  }
}

/** An error's message, with every URL in it redacted (credentials, signatures, tokens). */
const messageOf = (error: Failure): string => errorsInternal.redactText(error.message || String(error))

/** The lines that describe an error: every option problem on a line of its own. */
const linesOf = (error: Failure): Array<string> =>
  error._tag === "InvalidStorageOptions"
    ? [
      `error: invalid options for the ${error.storageType} storage:`,
      ...error.issues.map((issue) => `  - ${errorsInternal.redactText(issue.field)}: ${errorsInternal.redactText(issue.problem)}`)
    ]
    : [`error: ${messageOf(error)}`]

/**
 * Prints an error (and, with `json`, its description on stdout) and returns
 * its exit code.
 *
 * @since 0.3.0
 * @category exit codes
 */
export const report = (
  errors: ReadonlyArray<Failure>,
  json: boolean,
  options: {
    /** Whether a partial download is kept for the next run (false with `--no-cache`); true when omitted. */
    readonly resumable?: boolean
  } = {}
): Effect.Effect<ExitCode> =>
  Effect.gen(function*() {
    // Several errors come only from reading the configuration; otherwise there is one.
    const codes = errors.map(exitCodeOf)
    const code = codes.includes(ExitCode.InvalidConfiguration) ? ExitCode.InvalidConfiguration : codes[0]!
    for (const line of errors.flatMap(linesOf)) yield* Console.error(line)
    const hint = hintOf(errors[0]!, code, options.resumable ?? true)
    if (hint !== undefined) yield* Console.error(hint)
    if (json) {
      yield* Console.log(JSON.stringify(
        {
          ok: false,
          exitCode: code,
          errors: errors.map((error) => ({
            tag: error._tag,
            message: messageOf(error),
            ...(error._tag === "InvalidStorageOptions"
              ? {
                issues: error.issues.map((issue) => ({
                  field: errorsInternal.redactText(issue.field),
                  problem: errorsInternal.redactText(issue.problem)
                }))
              }
              : {})
          }))
        },
        null,
        2
      ))
    }
    return code
  })

/** A command's way of ending with a code other than 0 (`run` turns it into the code). */
class Exit extends Data.TaggedError("mlup-storage/Cli/Exit")<{ readonly code: ExitCode }> {}

const exitWith = (code: ExitCode): Effect.Effect<void, Exit> =>
  code === ExitCode.Success ? Effect.void : Effect.fail(new Exit({ code }))

const sourceOptions = {
  uri: Args.text({ name: "uri" }).pipe(
    Args.withDescription(
      "Where the model is, as a URI: s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, " +
        "hf://org/name@revision/path, https://host/path/model.onnx, file:///models/iris " +
        "(the storage_uri kwarg; other options go in --kwargs or --config)."
    ),
    Args.optional
  ),
  storageType: Options.text("storage-type").pipe(
    Options.withAlias("t"),
    Options.withDescription("The storage: disk, http, s3, gcs, azure, hf, mlup's full names, or module#export for your own."),
    Options.optional
  ),
  kwargs: Options.text("kwargs").pipe(
    Options.withAlias("k"),
    Options.withDescription(
      "The storage's options (mlup's storage_kwargs) as a JSON object; merged over the config file's."
    ),
    Options.optional
  ),
  config: Options.text("config").pipe(
    Options.withAlias("c"),
    Options.withDescription(
      "A config file, JSON or YAML: storage_type and storage_kwargs at the top level, or in the ml section of an mlup config."
    ),
    Options.optional
  ),
  envPrefix: Options.text("env-prefix").pipe(
    Options.withDescription(
      "Without --storage-type, --kwargs or --config the environment is read (STORAGE_TYPE, " +
        "STORAGE_KWARGS, STORAGE_KWARGS_<FIELD>); with a prefix, PREFIX_STORAGE_TYPE..."
    ),
    Options.optional
  )
}

/** The built-in storages that keep a cache (and take `cache_dir` and `verify`). */
const remoteStorages = new Set(["http", "s3", "gcs", "azure", "hf", "oci"])

const json = Options.boolean("json").pipe(Options.withDescription("Print a machine-readable result on stdout."))

/** Where the renderer writes: stderr, so that stdout holds only the result. */
const stderr: progressView.Output = {
  get isTTY() {
    return process.stderr.isTTY === true
  },
  get columns() {
    return process.stderr.columns || 80
  },
  write: (text) => void process.stderr.write(text)
}

const table = (rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)))
  return rows.map((row) => row.map((cell, column) => cell.padEnd(widths[column]!)).join("  ").trimEnd()).join("\n")
}

/** One delivered file, as `fetch` prints it. */
type Row = place.Delivered

// The rows of the delivered files (their sha256 with --hash).
const rowsOf = (
  placed: ReadonlyArray<place.Delivered & { readonly file?: place.Source["file"] }>,
  hash: boolean
) =>
  Effect.forEach(placed, (file) =>
    Effect.gen(function*() {
      const { file: _source, ...row } = file
      return hash ? { ...row, sha256: yield* place.sha256(file) } : row
    }))

// A duration flag: seconds, or an Effect duration ("5 minutes").
const durationOf = (argument: string, text: string) => {
  const decoded = /^\s*\d+(\.\d+)?\s*$/.test(text)
    ? Option.some(Duration.seconds(Number(text)))
    : Duration.decodeUnknown(text.trim())
  return Option.isSome(decoded) && Duration.greaterThan(decoded.value, Duration.zero)
    ? Effect.succeed(decoded.value)
    : Effect.fail([
      new CliError.InvalidArgument({ argument, reason: `is not a duration ("${text}"): seconds (30), or "5 minutes"` })
    ])
}

// --watch and the flags that go with it (they need it; it needs --to).
const watchOptionsOf = (flags: {
  readonly watch: boolean
  readonly to: Option.Option<string>
  readonly interval: Option.Option<string>
  readonly settle: Option.Option<string>
  readonly exec: Option.Option<string>
}) =>
  Effect.gen(function*() {
    if (!flags.watch) {
      for (const [argument, value] of [["--interval", flags.interval], ["--settle", flags.settle], ["--exec", flags.exec]] as const) {
        if (Option.isSome(value)) return yield* Effect.fail([new CliError.InvalidArgument({ argument, reason: "needs --watch" })])
      }
      return Option.none()
    }
    if (Option.isNone(flags.to)) {
      return yield* Effect.fail([
        new CliError.InvalidArgument({ argument: "--watch", reason: "needs --to: the folder kept in step with the source" })
      ])
    }
    const interval = Option.isSome(flags.interval) ? yield* durationOf("--interval", flags.interval.value) : undefined
    const settle = Option.isSome(flags.settle) ? yield* durationOf("--settle", flags.settle.value) : undefined
    return Option.some({ watch: { interval, settle } satisfies Storage.WatchOptions, exec: flags.exec })
  })

/**
 * `mlup-storage fetch`: delivers the model the configuration names, prints a
 * table (or JSON) of its files; with `--to DIR` the files are placed in DIR.
 *
 * @since 0.3.0
 * @category commands
 */
export const fetch = Command.make(
  "fetch",
  {
    ...sourceOptions,
    to: Options.text("to").pipe(
      Options.withDescription(
        "Place the files in this folder (created if needed); each file appears complete or not at all."
      ),
      Options.optional
    ),
    noCache: Options.boolean("no-cache").pipe(
      Options.withDescription(
        "With --to, for remote storages: no persistent cache; downloads go through a staging folder inside --to " +
          "(an init container's choice: one copy on disk, nothing left behind, no resume across runs)."
      )
    ),
    verify: Options.boolean("verify").pipe(
      Options.withDescription(
        "For remote storages: re-hash every cached file before it is used (verify: always), not only those that changed on disk."
      )
    ),
    unpack: Options.choice("unpack", ["auto", "tar", "tar.gz", "tgz", "tar.zst", "zip"]).pipe(
      Options.withDescription(
        "Unpack archives into the files they hold (the unpack option): auto by extension (.tar, .tar.gz, .tgz, .tar.zst, .zip), " +
          "or the format every selected file is read as. The mask (file_mask) then selects among their files."
      ),
      Options.optional
    ),
    watch: Options.boolean("watch").pipe(
      Options.withDescription(
        "With --to: keep the folder in step with the source until interrupted (a sidecar): each new version is " +
          "switched in all at once, the files it no longer has moved out (with the sub-folders they leave empty); the first version at once."
      )
    ),
    interval: Options.text("interval").pipe(
      Options.withDescription("With --watch: how often the source is asked again (seconds, or \"5 minutes\"; default 30)."),
      Options.optional
    ),
    settle: Options.text("settle").pipe(
      Options.withDescription(
        "With --watch: how long a change must hold still before it is placed (seconds, or \"10 seconds\"; default 2)."
      ),
      Options.optional
    ),
    exec: Options.text("exec").pipe(
      Options.withDescription(
        "With --watch: a shell command run after each version is placed (say, one that tells a server to reload), " +
          "with MLUP_STORAGE_DIR, MLUP_STORAGE_VERSION and MLUP_STORAGE_DIGEST set; its output goes to stderr."
      ),
      Options.optional
    ),
    hash: Options.boolean("hash").pipe(Options.withDescription("Print each file's sha256.")),
    json,
    quiet: Options.boolean("quiet").pipe(
      Options.withAlias("q"),
      Options.withDescription("No progress output; print only the delivered paths, one per line (or --json).")
    )
  },
  (flags) =>
    Effect.gen(function*() {
      const validated = yield* source.validatedOf(flags)
      // The remote storages keep a cache; these flags are its options.
      const remote = remoteStorages.has(validated.definition.name)
      // An unset shell variable (`--to "$MODEL_DIR"`) must not mean the current folder.
      if (Option.isSome(flags.to) && flags.to.value.trim() === "") {
        return yield* Effect.fail([
          new CliError.InvalidArgument({
            argument: "--to",
            reason: "is empty (an unset variable?): name the folder to place the files in"
          })
        ])
      }
      if (flags.noCache && Option.isNone(flags.to)) {
        return yield* Effect.fail([
          new CliError.InvalidArgument({ argument: "--no-cache", reason: "needs --to: the files must go somewhere" })
        ])
      }
      const watching = yield* watchOptionsOf(flags)
      const delivered = yield* Effect.scoped(Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const noCacheDir = flags.noCache && remote && Option.isSome(flags.to)
          ? yield* fs.makeDirectory(flags.to.value, { recursive: true }).pipe(
            Effect.zipRight(fs.makeTempDirectoryScoped({ directory: flags.to.value, prefix: ".mlup-storage-cache-" })),
            Effect.mapError(errorsInternal.writeFailed(flags.to.value, "create a staging folder in", "target")),
            Effect.map(Option.some)
          )
          : Option.none<string>()
        const unpack = Option.isSome(flags.unpack) ? { unpack: flags.unpack.value } : {}
        const kwargs = remote
          ? {
            ...(validated.kwargs as Record<string, unknown>),
            ...(flags.verify ? { verify: "always" } : {}),
            ...(Option.isSome(noCacheDir) ? { cache_dir: noCacheDir.value } : {}),
            ...unpack
          }
          : { ...(validated.kwargs as Record<string, unknown>), ...unpack }
        const storage = yield* validated.definition.make(kwargs)
        if (Option.isSome(watching) && Option.isSome(flags.to)) {
          yield* follow_.follow({
            storage,
            to: flags.to.value,
            link: remote,
            watch: watching.value.watch,
            exec: Option.getOrUndefined(watching.value.exec),
            report: ({ files, version }) =>
              Effect.flatMap(rowsOf(files, flags.hash), (rows) => show(rows, { version: version.version, digest: version.digest }))
          })
          return Option.none()
        }
        const progress = yield* Progress.make
        const view = flags.quiet ? undefined : yield* progressView.render(yield* progress.subscribe, stderr)
        const files = yield* storage.load.pipe(Effect.provideService(Progress.Progress, progress))
        if (view !== undefined) yield* view.finish
        const sources = yield* place.describe(files)
        const placed: ReadonlyArray<place.Delivered & { readonly file?: place.Source["file"] }> =
          Option.isSome(flags.to) ? yield* place.placeAll(sources, flags.to.value, { link: remote }) : sources
        return Option.some(yield* rowsOf(placed, flags.hash))
      })).pipe(
        // Bytes are used only inside the load's scope: a released buffer here is a bug.
        Effect.catchTag("BytesReleasedError", Effect.die),
        Effect.mapError((error): ReadonlyArray<Failure> => [error])
      )
      // The results: once; with --watch, after each version (a JSON line each).
      function show(rows: ReadonlyArray<Row>, version?: { readonly version: number; readonly digest: string }) {
        return Effect.gen(function*() {
          if (flags.json) {
            const result = { ok: true, ...version, storageType: validated.storageType, to: Option.getOrNull(flags.to), files: rows }
            yield* Console.log(version === undefined ? JSON.stringify(result, null, 2) : JSON.stringify(result))
          } else if (flags.quiet) {
            // Quiet: the delivered paths, one per line, for scripts (`$(mlup-storage fetch -q …)`).
            for (const file of rows) yield* Console.log(file.path)
          } else {
            const header = ["name", "size", "path", ...(flags.hash ? ["sha256"] : [])]
            const lines = rows.map((file) => [
              file.name,
              progressView.formatBytes(file.size),
              file.path,
              ...(flags.hash ? [file.sha256 ?? ""] : [])
            ])
            if (version !== undefined) {
              yield* Console.log(`version ${version.version} (${version.digest.slice(0, 12)}) placed:`)
            }
            yield* Console.log(table([header, ...lines]))
          }
        })
      }
      if (Option.isSome(delivered)) yield* show(delivered.value)
      return ExitCode.Success as ExitCode
    }).pipe(
      Effect.catchAll((errors) => report(errors, flags.json, { resumable: !flags.noCache })),
      Effect.flatMap(exitWith),
      Effect.onInterrupt(() =>
        Console.error(
          flags.watch
            ? "interrupted: the folder holds the last version placed, whole (a version is switched in all at once or not at all)"
            : flags.noCache
            ? "interrupted: nothing was placed; with --no-cache nothing is kept, and the next run starts over"
            : "interrupted: nothing was placed; a partial download stays in the cache, and the next run resumes it"
        )
      )
    )
).pipe(Command.withDescription(
  "Fetch (or locate) the model the configuration names and list its files; with --to, place them in a folder."
))

/**
 * `mlup-storage check`: validates the configuration and prints every problem
 * found, without reading any file or sending any request.
 *
 * @since 0.3.0
 * @category commands
 */
export const check = Command.make("check", { ...sourceOptions, json }, (flags) =>
  Effect.gen(function*() {
    const validated = yield* source.validatedOf(flags)
    if (flags.json) {
      yield* Console.log(JSON.stringify({ ok: true, storageType: validated.storageType }, null, 2))
    } else {
      yield* Console.log(`ok: the ${validated.storageType} storage's options are valid`)
    }
    return ExitCode.Success as ExitCode
  }).pipe(Effect.catchAll((errors) => report(errors, flags.json)), Effect.flatMap(exitWith))).pipe(
    Command.withDescription(
      "Validate the configuration (flags, config file or environment) and print every problem, without fetching."
    )
  )

/**
 * The root command, `mlup-storage`, with `fetch` and `check`.
 *
 * @since 0.3.0
 * @category commands
 */
export const command = Command.make("mlup-storage").pipe(
  Command.withDescription("Fetch machine-learning models from disk, HTTP(S) or S3-compatible stores, as mlup configures them."),
  Command.withSubcommands([fetch, check])
)

/**
 * Runs the command line on `argv` (as `process.argv`) and returns the exit
 * code; every failure is printed and mapped to its code (usage errors are
 * `InvalidConfiguration`). Interruption is not caught: the caller's runtime
 * sees it (the binary exits with `ExitCode.Interrupted` or `ExitCode.Terminated`).
 *
 * @since 0.3.0
 * @category running
 */
export const run = (
  argv: ReadonlyArray<string>,
  options?: { readonly version?: string }
): Effect.Effect<ExitCode, never, Storage.Requirements | CliApp.CliApp.Environment> => {
  const args = withGlobalOptionsFirst(argv)
  const json = args.includes("--json")
  return Command.run(command, { name: "mlup-storage", version: options?.version ?? version })(args).pipe(
    Effect.as(ExitCode.Success as ExitCode),
    Effect.catchAll((error) => {
      if (error instanceof Exit) return Effect.succeed(error.code)
      // A usage error: @effect/cli has printed it on stderr; with --json, stdout says so too.
      const message = ValidationError.isValidationError(error) && "error" in error
        ? stripAnsi(HelpDoc.toAnsiText(error.error)).trim()
        : String(error)
      return json
        ? Effect.as(
          Console.log(JSON.stringify(
            {
              ok: false,
              exitCode: ExitCode.InvalidConfiguration,
              errors: [{ tag: "UsageError", message: errorsInternal.redactText(message) }]
            },
            null,
            2
          )),
          ExitCode.InvalidConfiguration as ExitCode
        )
        : Effect.succeed(ExitCode.InvalidConfiguration as ExitCode)
    }),
    Effect.catchAllCause((cause) =>
      Cause.isInterruptedOnly(cause)
        ? Effect.failCause(cause as Cause.Cause<never>)
        : Effect.as(
          Console.error(`error: unexpected failure\n${errorsInternal.redactText(Cause.pretty(cause))}`),
          ExitCode.Failure
        )
    )
  )
}

/**
 * `--log-level` is an option of the whole program, which @effect/cli reads
 * only before the subcommand: wherever it is given, it is moved there.
 *
 * @since 0.4.0
 * @category running
 */
export const withGlobalOptionsFirst = (argv: ReadonlyArray<string>): Array<string> => {
  const [node, script, ...rest] = argv
  const global: Array<string> = []
  const others: Array<string> = []
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!
    if (arg === "--") {
      others.push(...rest.slice(i))
      break
    }
    if (arg.startsWith("--log-level=")) global.push(arg)
    else if (arg === "--log-level" && i + 1 < rest.length) global.push(arg, rest[++i]!)
    else others.push(arg)
  }
  return [node ?? "node", script ?? "mlup-storage", ...global, ...others]
}

/**
 * Text without ANSI escape sequences (colours, styles, cursor moves).
 *
 * @since 0.4.0
 * @category running
 */
export const stripAnsi = (text: string): string =>
  // eslint-disable-next-line no-control-regex
  text.replace(/\u001b\[[0-9;?]*[ -\/]*[@-~]|\u001b\][^\u0007]*(\u0007|\u001b\\)/g, "")
