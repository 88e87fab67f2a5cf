/**
 * Selecting a storage: mlup's pair `{ storage_type, storage_kwargs }` (in
 * code, from a config file, or from Effect's `Config`), the built-in
 * storages, and the registry of storages a selection can name (storages of
 * your own included, by definition or by import path).
 *
 * @since 0.5.0
 */
import * as Path from "@effect/platform/Path"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as SchemaAST from "effect/SchemaAST"
import * as AzureStorage from "./AzureStorage.js"
import * as DiskStorage from "./DiskStorage.js"
import * as GcsStorage from "./GcsStorage.js"
import * as HfStorage from "./HfStorage.js"
import * as OciStorage from "./OciStorage.js"
import * as HttpStorage from "./HttpStorage.js"
import * as definition_ from "./internal/definition.js"
import * as errors from "./internal/errors.js"
import * as internal from "./internal/storage.js"
import * as MemoryStorage from "./MemoryStorage.js"
import * as S3Storage from "./S3Storage.js"
import * as StorageError from "./StorageError.js"
import * as StorageUri from "./StorageUri.js"


// The operations of a storage, and what its constructor may use (as `Storage` names them).
type Service = internal.Service
type Requirements = definition_.Requirements

/**
 * A storage that can be selected by `storage_type`: its name (and aliases),
 * the Schema that validates its `storage_kwargs`, and its constructor.
 *
 * @since 0.1.0
 * @category models
 */
export type StorageDefinition<Kwargs = any> = definition_.StorageDefinition<Kwargs>

/**
 * Defines a storage for `storage_type` selection. Register it in code with the
 * `storages` option, or export it from a module and name it as
 * `"module-specifier#exportName"` in `storage_type`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const define: <Kwargs>(definition: {
  readonly name: string
  readonly aliases?: ReadonlyArray<string> | undefined
  readonly kwargs: Schema.Schema<Kwargs, any>
  readonly make: (
    kwargs: Kwargs
  ) => Effect.Effect<Service, StorageError.StorageError, Requirements>
}) => StorageDefinition<Kwargs> = definition_.define

/**
 * @since 0.1.0
 * @category refinements
 */
export const isStorageDefinition: (u: unknown) => u is StorageDefinition = definition_.isStorageDefinition

/**
 * The storages built in: Memory (the default), Disk, HTTP, S3, GCS, Azure Blob
 * Storage and the Hugging Face Hub.
 *
 * @since 0.1.0
 * @category definitions
 */
export const builtins: ReadonlyArray<StorageDefinition> = [
  MemoryStorage.definition,
  DiskStorage.definition,
  HttpStorage.definition,
  S3Storage.definition,
  GcsStorage.definition,
  AzureStorage.definition,
  HfStorage.definition,
  OciStorage.definition
]

/**
 * mlup's selection: `storage_type` (default `"memory"`) and `storage_kwargs`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Selection = Schema.Struct({
  storage_type: Schema.optionalWith(Schema.String, { default: () => MemoryStorage.storageType }),
  storage_kwargs: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.Unknown }), {
    default: () => ({})
  })
})

/**
 * @since 0.1.0
 * @category models
 */
export interface Selection {
  readonly storage_type?: string | undefined
  readonly storage_kwargs?: Readonly<Record<string, unknown>> | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface SelectionOptions {
  /** Storages registered in code, besides the built-in ones (a later one wins on a shared name). */
  readonly storages?: ReadonlyArray<StorageDefinition> | undefined
  /** The model for the Memory storage, which a config file cannot hold. */
  readonly model?: unknown
}

const registryOf = (options: SelectionOptions | undefined): Map<string, StorageDefinition> => {
  const registry = new Map<string, StorageDefinition>()
  for (const definition of [...builtins, ...(options?.storages ?? [])]) {
    for (const name of [definition.name, ...definition.aliases]) registry.set(name, definition)
  }
  return registry
}

const knownNames = (registry: Map<string, StorageDefinition>): Array<string> => [...registry.keys()]

const importDefinition = (
  storageType: string,
  known: Array<string>
): Effect.Effect<StorageDefinition, StorageError.UnknownStorageType, Path.Path> =>
  Effect.gen(function*() {
    const path = yield* Path.Path
    // "module#export", or a module path alone for its default export.
    const at = storageType.lastIndexOf("#")
    const specifier = at === -1 ? storageType : storageType.slice(0, at)
    const exportName = (at === -1 ? "" : storageType.slice(at + 1)) || "default"
    const unknown = (reason: string, cause?: unknown) =>
      new StorageError.UnknownStorageType({
        storageType,
        known,
        reason,
        ...(cause === undefined ? {} : { cause })
      })
    // A path is resolved against the working directory, as a config file's reader expects.
    const url = specifier.startsWith(".") || path.isAbsolute(specifier)
      ? (yield* Effect.orDie(path.toFileUrl(path.resolve(specifier)))).href
      : specifier
    const module = yield* Effect.tryPromise({
      try: () => import(url) as Promise<Record<string, unknown>>,
      catch: (cause) =>
        unknown(`could not import "${specifier}": ${cause instanceof Error ? cause.message : String(cause)}`, cause)
    })
    const exported = module[exportName]
    if (!definition_.isStorageDefinition(exported)) {
      return yield* Effect.fail(
        unknown(
          exported === undefined
            ? `"${specifier}" has no export "${exportName}"`
            : `the export "${exportName}" of "${specifier}" is not a storage definition (made with Storage.define)`
        )
      )
    }
    return exported
  })

/**
 * Finds the definition that `storage_type` names: a built-in or registered
 * name (mlup's full names included), or `"module-specifier#exportName"`.
 *
 * @since 0.1.0
 * @category selection
 */
export const resolve = (
  storageType: string,
  options?: SelectionOptions
): Effect.Effect<StorageDefinition, StorageError.UnknownStorageType, Path.Path> => {
  const registry = registryOf(options)
  const found = registry.get(storageType)
  if (found !== undefined) return Effect.succeed(found)
  // A module: "module#export", or a path ("./my-storages.js", "/opt/storages.mjs", a file: URL) for its default export.
  if (storageType.includes("#") || /^(\.{1,2}\/|\/|file:)|\.[cm]?[jt]s$/.test(storageType)) {
    return importDefinition(storageType, knownNames(registry))
  }
  return Effect.fail(new StorageError.UnknownStorageType({ storageType, known: knownNames(registry) }))
}

/**
 * A selection that passed validation: the definition `storage_type` names and
 * the decoded `storage_kwargs`, ready for `definition.make`.
 *
 * @since 0.1.0
 * @category selection
 */
export interface Validated {
  readonly storageType: string
  readonly definition: StorageDefinition
  readonly kwargs: unknown
}

/**
 * Checks a selection without making the storage (no file is read, no request
 * is sent): `storage_type` must name a storage, and `storage_kwargs` must pass
 * its schema. Every problem of the kwargs is reported at once, by field.
 *
 * @since 0.1.0
 * @category selection
 */
export const validate = (
  selection: Selection,
  options?: SelectionOptions
): Effect.Effect<Validated, StorageError.InvalidStorageOptions | StorageError.UnknownStorageType, Path.Path> =>
  Effect.gen(function*() {
    // The selection itself (not its storage_kwargs) is what is wrong when it is no mapping.
    if (typeof selection !== "object" || selection === null || Array.isArray(selection)) {
      return yield* new StorageError.InvalidStorageOptions({
        storageType: "(selection)",
        issues: [
          new StorageError.OptionIssue({
            field: "selection",
            problem: `must be a mapping with storage_type and storage_kwargs, got ${
              selection === null ? "null" : Array.isArray(selection) ? "an array" : `a value of type ${typeof selection}`
            }`
          })
        ]
      })
    }
    // JSON.parse makes "__proto__" an own key; no storage has such an option, and it is never dropped in silence.
    const rawKwargs = (selection as { readonly storage_kwargs?: unknown }).storage_kwargs
    if (typeof rawKwargs === "object" && rawKwargs !== null && Object.prototype.hasOwnProperty.call(rawKwargs, "__proto__")) {
      return yield* new StorageError.InvalidStorageOptions({
        storageType: String(selection.storage_type ?? "(selection)"),
        issues: [new StorageError.OptionIssue({ field: "__proto__", problem: "is not an option of any storage" })]
      })
    }
    const decoded = yield* Schema.decodeUnknown(Selection, { errors: "all" })(selection).pipe(
      Effect.mapError(errors.fromParseError(String(selection?.storage_type ?? "(selection)"), selection))
    )
    // storage_uri (KServe's name) stands for the storage and the kwargs that locate the files.
    const named = decoded.storage_type === undefined ? undefined : yield* Effect.option(resolve(decoded.storage_type, options))
    const expanded = yield* StorageUri.expand({
      storage_type: selection?.storage_type,
      storage_kwargs: decoded.storage_kwargs
    }, { httpForHttps: named !== undefined && Option.getOrUndefined(named) === HttpStorage.definition })
    const storageType = expanded.storage_type ?? decoded.storage_type
    const definition = yield* resolve(storageType, options)
    if (expanded.fromUri !== undefined && (yield* resolve(expanded.fromUri)) !== definition) {
      return yield* new StorageError.InvalidStorageOptions({
        storageType,
        issues: [
          new StorageError.OptionIssue({
            field: StorageUri.kwarg,
            problem: `is a URI of the ${expanded.fromUri} storage, but storage_type names ${storageType}: give one of them`
          })
        ]
      })
    }
    const raw = expanded.storage_kwargs ?? decoded.storage_kwargs
    const input = definition === MemoryStorage.definition && options !== undefined && "model" in options &&
        !("model" in raw)
      ? { ...raw, model: options.model }
      : raw
    const kwargs = yield* Schema.decodeUnknown(definition.kwargs, { errors: "all", onExcessProperty: "error" })(
      input
    ).pipe(Effect.mapError(errors.fromParseError(storageType, input)))
    return { storageType, definition, kwargs }
  })

/**
 * A storage from mlup's `{ storage_type, storage_kwargs }`.
 *
 * @since 0.1.0
 * @category selection
 */
export const fromSelection = (
  selection: Selection,
  options?: SelectionOptions
): Effect.Effect<Service, StorageError.StorageError, Requirements> =>
  Effect.flatMap(validate(selection, options), ({ definition, kwargs }) => definition.make(kwargs))

/**
 * @since 0.1.0
 * @category layers
 */
export const layerFromSelection = (
  selection: Selection,
  options?: SelectionOptions
): Layer.Layer<internal.Storage, StorageError.StorageError, Requirements> =>
  Layer.effect(internal.Storage, fromSelection(selection, options))

/**
 * @since 0.1.0
 * @category models
 */
export interface ConfigOptions extends SelectionOptions {
  /** Reads every name below this prefix (`MLUP` reads `MLUP_STORAGE_TYPE`, ...). */
  readonly prefix?: string | undefined
}

interface KwargsField {
  readonly name: string
  readonly isString: boolean
}

const acceptsString = (ast: SchemaAST.AST): boolean => {
  switch (ast._tag) {
    case "StringKeyword":
    case "TemplateLiteral":
      return true
    case "Literal":
      return typeof ast.literal === "string"
    case "Union":
      return ast.types.some(acceptsString)
    case "Refinement":
      return acceptsString(ast.from)
    case "Transformation":
      return acceptsString(ast.from)
    default:
      return false
  }
}

const fieldsOf = (ast: SchemaAST.AST): Array<KwargsField> => {
  switch (ast._tag) {
    case "Transformation":
    case "Refinement":
      return fieldsOf(ast.from)
    case "Union":
      return ast.types.flatMap(fieldsOf)
    case "TypeLiteral":
      return ast.propertySignatures.flatMap((signature) =>
        typeof signature.name === "string" ? [{ name: signature.name, isString: acceptsString(signature.type) }] : []
      )
    default:
      return []
  }
}

const parseJsonObject = (
  storageType: string,
  field: string,
  text: string
): Effect.Effect<Record<string, unknown>, StorageError.InvalidStorageOptions> =>
  Effect.try({
    try: () => JSON.parse(text) as unknown,
    catch: () => "is not valid JSON"
  }).pipe(
    Effect.filterOrFail(
      (value): value is Record<string, unknown> =>
        typeof value === "object" && value !== null && !Array.isArray(value),
      () => "is not a JSON object"
    ),
    Effect.mapError((problem) =>
      new StorageError.InvalidStorageOptions({
        storageType,
        issues: [new StorageError.OptionIssue({ field, problem })]
      })
    )
  )

/**
 * Reads the selection from Effect's `Config` (environment variables with the
 * default provider), without building the storage:
 *
 * - `STORAGE_TYPE`: as `storage_type` (default `memory`);
 * - `STORAGE_KWARGS`: all of `storage_kwargs`, as a JSON object;
 * - `STORAGE_KWARGS_<FIELD>`: one field, named in upper case
 *   (`STORAGE_KWARGS_PATH_TO_FILES`); it wins over the same field in
 *   `STORAGE_KWARGS`. A field whose schema takes a string is taken as written;
 *   any other is parsed as JSON (`true`, `42`, `["a"]`).
 *
 * `STORAGE_KWARGS` and each field are read as `Redacted`, so credentials are
 * never printed by Effect's logging, and validation errors never show a value.
 * The selection it returns holds the values as written (a storage's schema
 * wraps its secrets in `Redacted` when it decodes them): do not log it.
 *
 * @since 0.1.0
 * @category selection
 */
export const selectionFromConfig = (
  options?: ConfigOptions
): Effect.Effect<
  Selection,
  StorageError.UnknownStorageType | StorageError.InvalidStorageOptions | ConfigError.ConfigError,
  Path.Path
> =>
  Effect.gen(function*() {
    const nest = <A>(config: Config.Config<A>) =>
      options?.prefix === undefined ? config : Config.nested(config, options.prefix)
    const prefixed = (name: string) => options?.prefix === undefined ? name : `${options.prefix}_${name}`
    // STORAGE_URI (KServe's name; read as a secret: a presigned URL is one) names the storage, unless STORAGE_TYPE does.
    const uri = yield* nest(Config.option(Config.redacted("STORAGE_URI")))
    const fromUri = Option.isSome(uri) ? yield* StorageUri.parse(Redacted.value(uri.value)) : undefined
    const storageType = yield* nest(
      Config.withDefault(Config.string("STORAGE_TYPE"), fromUri?.storage_type ?? MemoryStorage.storageType)
    )
    const definition = yield* resolve(storageType, options)
    const kwargs: Record<string, unknown> = Option.isSome(uri) ? { [StorageUri.kwarg]: Redacted.value(uri.value) } : {}
    const all = yield* nest(Config.option(Config.redacted("STORAGE_KWARGS")))
    if (Option.isSome(all)) {
      Object.assign(
        kwargs,
        yield* parseJsonObject(storageType, prefixed("STORAGE_KWARGS"), Redacted.value(all.value))
      )
    }
    const fields = fieldsOf(definition.kwargs.ast)
    // A variable below STORAGE_KWARGS_ that names no field is a typo, not silence.
    const known = new Set(fields.map((field) => field.name.toUpperCase()))
    const unknown = (yield* variablesUnder([...(options?.prefix?.split("_") ?? []), "STORAGE", "KWARGS"]))
      .filter((name) => !known.has(name))
    if (unknown.length > 0) {
      return yield* new StorageError.InvalidStorageOptions({
        storageType: definition.name,
        issues: unknown.map((name) =>
          new StorageError.OptionIssue({
            field: prefixed(`STORAGE_KWARGS_${name}`),
            problem: `names no option of the ${definition.name} storage: expected one of ${
              [...known].map((option) => prefixed(`STORAGE_KWARGS_${option}`)).join(", ")
            }`
          })
        )
      })
    }
    for (const field of fields) {
      const value = yield* nest(
        Config.nested(Config.option(Config.redacted(field.name.toUpperCase())), "STORAGE_KWARGS")
      )
      if (Option.isNone(value)) continue
      const text = Redacted.value(value.value)
      kwargs[field.name] = field.isString ? text : parseJsonOr(text)
    }
    return { storage_type: storageType, storage_kwargs: kwargs }
  })

/**
 * A storage from the current `ConfigProvider`: `selectionFromConfig`, then
 * `fromSelection`.
 *
 * @since 0.1.0
 * @category selection
 */
export const fromConfig = (
  options?: ConfigOptions
): Effect.Effect<
  Service,
  StorageError.StorageError | ConfigError.ConfigError,
  Requirements
> => Effect.flatMap(selectionFromConfig(options), (selection) => fromSelection(selection, options))

/**
 * The names of the variables below a path of the current `ConfigProvider`
 * (split at "_", as the environment's provider splits them), relative to it:
 * `PATH_TO_FILES` for `STORAGE_KWARGS_PATH_TO_FILES`. A provider that cannot
 * list its keys lists none.
 */
const variablesUnder = (base: ReadonlyArray<string>): Effect.Effect<Array<string>> =>
  Effect.configProviderWith((provider) => {
    const children = (path: ReadonlyArray<string>) =>
      Effect.orElseSucceed(
        Effect.map(provider.flattened.enumerateChildren(path), (names) => [...names]),
        () => [] as Array<string>
      )
    const walk = (path: ReadonlyArray<string>, depth: number): Effect.Effect<Array<string>> =>
      Effect.flatMap(children(path), (names) =>
        names.length === 0
          ? Effect.succeed(path.length > base.length ? [path.slice(base.length).join("_")] : [])
          : depth > 16
          ? Effect.succeed([])
          : Effect.map(Effect.forEach(names, (name) => walk([...path, name], depth + 1)), (all) => all.flat()))
    return walk(base, 0)
  })

const parseJsonOr = (text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

/**
 * `fromConfig` as a layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options?: ConfigOptions
): Layer.Layer<internal.Storage, StorageError.StorageError | ConfigError.ConfigError, Requirements> =>
  Layer.effect(internal.Storage, fromConfig(options))
