/**
 * Sources as URIs, as KServe's `storage_uri`, the AWS CLI and init containers
 * name them: `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`,
 * `hf://org/name@revision/path`,
 * `https://host/path/model.onnx`,
 * `file:///models/iris` (or an absolute path). A URI is another way to write
 * mlup's `storage_type` and the kwargs that say where the files are; every
 * other kwarg (`file_mask`, `sha256`, `cache_dir`, …) is given beside it.
 *
 * @since 0.4.0
 */
import * as Either from "effect/Either"
import * as url from "node:url"
import * as errors from "./internal/errors.js"
import * as oci from "./internal/oci.js"
import * as internalOptions from "./internal/options.js"
import * as StorageError from "./StorageError.js"

/**
 * The kwarg that holds a URI (KServe's name), in `storage_kwargs` or, as
 * `STORAGE_URI`, in the environment.
 *
 * @since 0.4.0
 * @category constants
 */
export const kwarg = "storage_uri"

/**
 * What a URI stands for: a storage and the kwargs that locate the files.
 *
 * @since 0.4.0
 * @category models
 */
export interface Parsed {
  readonly storage_type: "s3" | "gcs" | "azure" | "hf" | "oci" | "http" | "disk"
  readonly storage_kwargs: Readonly<Record<string, unknown>>
}

const invalid = (storageType: string, problem: string) =>
  new StorageError.InvalidStorageOptions({
    storageType,
    issues: [new StorageError.OptionIssue({ field: kwarg, problem })]
  })

// Credentials never go in a store's URI (they would be shown wherever the
// location is): the message names the scheme only, never the value.
const credentialsRefused = (storageType: string, scheme: string, how: string) =>
  invalid(
    storageType,
    `the ${scheme}:// URI carries credentials or a port before the ${how}, which it does not take ` +
      `(the value is not shown): give credentials in their own options or the environment`
  )

// `bucket[/prefix]` of an s3://, gs:// or az:// URI, cut from the raw string
// (keys are not URL-encoded there), and checked as a key.
const bucketAndPrefix = (
  uri: string,
  parsed: URL,
  scheme: string,
  storageType: Parsed["storage_type"],
  what: "bucket" | "container",
  shown: string
): Either.Either<{ readonly bucket: string; readonly prefix: string }, StorageError.InvalidStorageOptions> => {
  const rest = uri.slice(scheme.length + "://".length)
  const slash = rest.indexOf("/")
  if (parsed.username !== "" || parsed.password !== "" || parsed.port !== "") {
    return Either.left(credentialsRefused(storageType, scheme, what))
  }
  if (parsed.hostname === "") return Either.left(invalid(storageType, `${shown} names no ${what} (${scheme}://${what}/prefix)`))
  if (parsed.search !== "" || parsed.hash !== "") {
    return Either.left(invalid(storageType, `${shown} has a query or fragment, which a ${scheme}:// URI does not take`))
  }
  const prefix = slash === -1 ? "" : rest.slice(slash + 1).replace(/^\/+/, "")
  const problem = internalOptions.keyProblem(prefix)
  if (problem !== undefined) return Either.left(invalid(storageType, `${shown}: the prefix ${problem}`))
  return Either.right({ bucket: parsed.hostname, prefix })
}

/**
 * Reads a URI: `s3://bucket[/prefix]` (the S3 storage: `bucket`, `prefix`),
 * `gs://bucket[/prefix]` (the GCS storage, the same kwargs),
 * `az://container[/prefix]` and `https://<account>.blob.core.windows.net/container[/prefix]`
 * (the Azure storage: `container`, `prefix`, and `account` from the URL),
 * `hf://[datasets/|spaces/]org/name[@revision][/path]` (the Hub storage:
 * `repo_id`, `repo_type`, `revision` percent-decoded, `path_in_repo`; a bare
 * `hf://name[@revision]` for the oldest repositories),
 * `oci://registry/repository:tag` or `@sha256:…` (the OCI storage: `reference`),
 * `http://…` / `https://…` (the HTTP storage: `urls`), `file:///path` or an
 * absolute path (the Disk storage: `path_to_files`). Anything else is
 * `InvalidStorageOptions` on `storage_uri`; the URI is shown redacted.
 *
 * @since 0.4.0
 * @category parsing
 */
export const parse = (
  uri: string,
  options?: {
    /** An https URL of an Azure blob service is the HTTP storage's too (when storage_type says http). */
    readonly httpForHttps?: boolean | undefined
  }
): Either.Either<Parsed, StorageError.InvalidStorageOptions> => {
  const shown = errors.cap(errors.redactUrl(uri))
  if (uri.startsWith("/")) return Either.right({ storage_type: "disk", storage_kwargs: { path_to_files: uri } })
  if (/^hf:\/\//i.test(uri)) return parseHub(uri, shown)
  if (/^oci:\/\//i.test(uri)) return parseOci(uri, shown)
  // Before URL parsing, which fails on a password holding "/" and would quote it.
  const store = /^(s3|gs|az):\/\/([^/]*)/i.exec(uri)
  if (store !== null && /[@:]/.test(store[2]!)) {
    const scheme = store[1]!.toLowerCase()
    return Either.left(
      credentialsRefused(scheme === "gs" ? "gcs" : scheme === "az" ? "azure" : "s3", scheme, scheme === "az" ? "container" : "bucket")
    )
  }
  let parsed: URL
  try {
    parsed = new URL(uri)
  } catch {
    return Either.left(invalid("(storage_uri)", `${shown} is not a URI: give s3://bucket/prefix, https://host/path, or file:///path`))
  }
  switch (parsed.protocol) {
    case "s3:":
    case "gs:": {
      const scheme = parsed.protocol.slice(0, -1)
      const storageType = scheme === "gs" ? "gcs" : "s3"
      return Either.map(bucketAndPrefix(uri, parsed, scheme, storageType, "bucket", shown), ({ bucket, prefix }) => ({
        storage_type: storageType,
        storage_kwargs: { bucket, ...(prefix === "" ? {} : { prefix }) }
      }))
    }
    case "az:":
      return Either.map(bucketAndPrefix(uri, parsed, "az", "azure", "container", shown), ({ bucket, prefix }) => ({
        storage_type: "azure",
        storage_kwargs: { container: bucket, ...(prefix === "" ? {} : { prefix }) }
      }))
    case "http:":
    case "https:": {
      // An Azure account's blob service (as KServe tells it): the Azure storage, not plain HTTP.
      const account = /^([a-z0-9]{3,24})\.blob\.core\.windows\.net$/.exec(parsed.hostname)
      if (
        options?.httpForHttps !== true && parsed.protocol === "https:" && account !== null && parsed.search === "" &&
        parsed.username === ""
      ) {
        const [container = "", ...rest] = parsed.pathname.split("/").filter((segment, i) => i > 0 || segment !== "")
        let prefix: string | undefined
        try {
          prefix = rest.map(decodeURIComponent).join("/")
        } catch {
          return Either.left(invalid("azure", `${shown}: the blob path is not percent-encoded properly`))
        }
        const problem = prefix === "" ? undefined : internalOptions.keyProblem(prefix)
        if (problem !== undefined) return Either.left(invalid("azure", `${shown}: the blob path ${problem}`))
        if (container !== "") {
          return Either.right({
            storage_type: "azure",
            storage_kwargs: { account: account[1]!, container, ...(prefix === "" ? {} : { prefix }) }
          })
        }
      }
      return Either.right({ storage_type: "http", storage_kwargs: { urls: uri } })
    }
    case "file:": {
      if (parsed.host !== "" && parsed.host !== "localhost") {
        return Either.left(invalid("disk", `${shown} names a host; a file URI is file:///path`))
      }
      return Either.right({ storage_type: "disk", storage_kwargs: { path_to_files: url.fileURLToPath(parsed) } })
    }
    default:
      return Either.left(
        invalid(
          "(storage_uri)",
          `${shown}: the scheme ${parsed.protocol.slice(0, -1)} is not supported (s3, gs, az, hf, oci, http, https, file)`
        )
      )
  }
}

// oci://registry/repository[:tag][@digest]: the reference as docker writes it, checked as the OCI
// storage checks it; credentials never go in it.
const parseOci = (uri: string, shown: string): Either.Either<Parsed, StorageError.InvalidStorageOptions> => {
  const reference = uri.slice("oci://".length)
  if (/^[^/@]*@[^/]*\//.test(reference)) return Either.left(credentialsRefused("oci", "oci", "registry"))
  if (/[?#]/.test(reference)) return Either.left(invalid("oci", `${shown} has a query or fragment, which an oci:// URI does not take`))
  return Either.match(oci.parseReference(reference), {
    onLeft: (problem) => Either.left(invalid("oci", `${shown}: ${problem}`)),
    onRight: () => Either.right({ storage_type: "oci" as const, storage_kwargs: { reference } })
  })
}

// hf://[datasets/|spaces/|models/]org/name[@revision][/path]: read by hand, as the
// repository's two segments and the revision do not fit a URL's host and path.
// The revision and the path are percent-decoded (a file named `a#b.bin` is
// `a%23b.bin`, as `#` and `?` would start a fragment or a query).
const parseHub = (uri: string, shown: string): Either.Either<Parsed, StorageError.InvalidStorageOptions> => {
  const rest = uri.slice("hf://".length)
  // A repository's name never holds ":" (hf://user:token@org/name): refused, never quoted.
  if ((rest.split("/")[0] ?? "").includes(":")) return Either.left(credentialsRefused("hf", "hf", "repository"))
  if (/[?#]/.test(rest)) {
    return Either.left(
      invalid("hf", `${shown} has a query or fragment, which an hf:// URI does not take (write # as %23 and ? as %3F)`)
    )
  }
  const segments = rest.split("/")
  const typed = /^(models|datasets|spaces)$/.exec(segments[0] ?? "")
  if (typed !== null) segments.shift()
  const repoType = typed === null ? "model" : typed[1]!.slice(0, -1)
  // The repository: org/name (or a bare name alone), the revision after "@" in its last segment.
  const count = segments.length === 1 || (segments.length === 2 && segments[1] === "") ? 1 : 2
  const repo = segments.slice(0, count)
  const last = repo[count - 1] ?? ""
  const at = last.indexOf("@")
  if (at !== -1) repo[count - 1] = last.slice(0, at)
  if (repo.some((segment) => segment === "")) {
    return Either.left(invalid("hf", `${shown} names no repository (hf://org/name[@revision][/path])`))
  }
  if (at !== -1 && at === last.length - 1) {
    return Either.left(invalid("hf", `${shown} has an empty revision after "@" (hf://org/name@revision, or no "@" for main)`))
  }
  let revision: string | undefined
  let pathInRepo: string
  try {
    revision = at === -1 ? undefined : decodeURIComponent(last.slice(at + 1))
    pathInRepo = segments.slice(count).map(decodeURIComponent).join("/").replace(/\/+$/, "")
  } catch {
    return Either.left(invalid("hf", `${shown}: the revision or the path is not percent-encoded properly`))
  }
  const problem = pathInRepo === "" ? undefined : internalOptions.keyProblem(pathInRepo)
  if (problem !== undefined) return Either.left(invalid("hf", `${shown}: the path ${problem}`))
  if (revision !== undefined && /[\u0000-\u001f\u007f]/.test(revision)) {
    return Either.left(invalid("hf", `${shown}: the revision holds a control character`))
  }
  return Either.right({
    storage_type: "hf",
    storage_kwargs: {
      repo_id: repo.join("/"),
      ...(repoType === "model" ? {} : { repo_type: repoType }),
      ...(revision === undefined ? {} : { revision }),
      ...(pathInRepo === "" ? {} : { path_in_repo: pathInRepo })
    }
  })
}

/** The storages whose mask defaults to mlup's `.pckl` by kwargs, and to every file by URI. */
const everyFileByDefault: ReadonlySet<Parsed["storage_type"]> = new Set(["s3", "gcs", "azure", "disk"])

/**
 * A selection with `storage_kwargs.storage_uri` expanded into the storage and
 * its kwargs. `storage_type`, when given too, must name the URI's storage (by
 * any of its names, checked by the caller); a kwarg that the URI sets (`bucket`,
 * `prefix`, `path_to_files`, `urls`) may not be given beside it. A store or
 * folder named by URI (`s3://`, `gs://`, `az://`, `file://`) delivers every
 * file under it unless `file_mask` is given (mlup's `.pckl` default holds for
 * the kwargs of mlup's own configuration). A selection
 * without `storage_uri` is returned as it is.
 *
 * @since 0.4.0
 * @category parsing
 */
export const expand = (selection: {
  readonly storage_type?: string | undefined
  readonly storage_kwargs?: Readonly<Record<string, unknown>> | undefined
}, options?: {
  /** storage_type names the HTTP storage: an https URL stays its own (an Azure blob URL included). */
  readonly httpForHttps?: boolean | undefined
}): Either.Either<
  { readonly storage_type?: string | undefined; readonly storage_kwargs?: Readonly<Record<string, unknown>> | undefined; readonly fromUri?: Parsed["storage_type"] },
  StorageError.InvalidStorageOptions
> => {
  const kwargs = selection.storage_kwargs
  if (kwargs === undefined || !Object.prototype.hasOwnProperty.call(kwargs, kwarg)) return Either.right(selection)
  const uri = kwargs[kwarg]
  if (typeof uri !== "string") return Either.left(invalid(selection.storage_type ?? "(storage_uri)", "must be a string (a URI)"))
  return Either.flatMap(parse(uri, options), (parsed) => {
    const { [kwarg]: _uri, ...rest } = kwargs
    const clashes = Object.keys(parsed.storage_kwargs).filter((key) =>
      Object.prototype.hasOwnProperty.call(rest, key) ||
      (key === "prefix" && Object.prototype.hasOwnProperty.call(rest, "path_to_files"))
    )
    if (clashes.length > 0) {
      return Either.left(
        new StorageError.InvalidStorageOptions({
          storageType: parsed.storage_type,
          issues: clashes.map((key) =>
            new StorageError.OptionIssue({
              field: key,
              problem: `is given by storage_uri (${errors.redactUrl(uri)}) too: give one or the other`
            })
          )
        })
      )
    }
    // A store or folder named by URI delivers every file under it unless a mask is given, as KServe's
    // storage initializer and `aws s3 cp --recursive` do; mlup's `.pckl` default is for mlup's own keys.
    const everyFile = everyFileByDefault.has(parsed.storage_type) &&
      !Object.prototype.hasOwnProperty.call(rest, "file_mask") && !Object.prototype.hasOwnProperty.call(rest, "files_mask")
    return Either.right({
      storage_type: selection.storage_type ?? parsed.storage_type,
      storage_kwargs: { ...parsed.storage_kwargs, ...(everyFile ? { file_mask: "" } : {}), ...rest },
      fromUri: parsed.storage_type
    })
  })
}
