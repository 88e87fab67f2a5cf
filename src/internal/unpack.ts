/**
 * The rules an archive's entries must pass before anything of them is
 * written (issue 20: unpacking, for every source). At least as strict as
 * Python's tarfile `data` filter (PEP 706), and stricter where a rule is
 * simpler to hold: a name is relative and stays inside the tree (no absolute
 * name, no drive, no `..`, no NUL, no backslash); only files, folders and
 * links are unpacked (no device, FIFO or socket); a link (symbolic or hard)
 * resolves inside the tree, through every link it passes (checked once the
 * archive's whole listing is known, as links may come in any order); no
 * entry is written through a symbolic link; permissions are masked (no
 * setuid, setgid or sticky bit, no write for group or others; a file is
 * readable and writable by its owner, executable by others only when by its
 * owner; a folder is 0755); owners are never applied. Limits on the entries,
 * the unpacked bytes and the compression ratio refuse a bomb, each named so
 * that a caller can raise it.
 *
 * Pure bookkeeping: the formats' readers (tar, zip) feed it entries, the
 * unpacking sink writes what it admits.
 *
 * @internal
 */
import * as Either from "effect/Either"

/** One entry of an archive, as its reader lists it. @internal */
export interface Entry {
  /** The name as the archive spells it ("/" separated). */
  readonly name: string
  readonly type: "file" | "directory" | "symlink" | "hardlink" | "other"
  /** For "other": what it is (a character device, a FIFO…), in messages. */
  readonly kind?: string | undefined
  /** The bytes it unpacks to (files). */
  readonly size: number
  /** The permission bits the archive gives it. */
  readonly mode: number
  /** A link's target, as the archive spells it. */
  readonly target?: string | undefined
}

/** What the rules refuse, and why: the entry, the rule, and (for a limit) its option. @internal */
export interface Refusal {
  readonly entry: string | undefined
  readonly rule:
    | "absolute name"
    | "parent reference"
    | "bad name"
    | "special file"
    | "absolute link"
    | "link outside the tree"
    | "link to nothing"
    | "through a link"
    | "duplicate"
    | "entries"
    | "bytes"
    | "ratio"
  readonly reason: string
  /** The option that raises the limit that was reached. */
  readonly limit?: "unpack_max_entries" | "unpack_max_bytes" | "unpack_max_ratio" | undefined
}

/** @internal */
export interface Limits {
  /** At most this many entries. */
  readonly maxEntries: number
  /** At most this many bytes unpacked, all files together. */
  readonly maxBytes: number
  /** Unpacked bytes at most this many times the archive's (compressed) bytes. */
  readonly maxRatio: number
}

/** An entry the rules let through: where it goes in the tree, and with which permissions. @internal */
export interface Admitted {
  readonly entry: Entry
  /** The normalized path inside the tree ("a/b/c"). */
  readonly path: string
  readonly mode: number
}

const refuse = (entry: string | undefined, rule: Refusal["rule"], reason: string, limit?: Refusal["limit"]) =>
  Either.left<Refusal>({ entry, rule, reason, ...(limit === undefined ? {} : { limit }) })

/**
 * A name as a path inside the tree: "/"-separated components, without empty
 * or "." ones; refused when absolute (or a drive), when it holds `..`, a NUL
 * or a backslash (a separator on Windows, a character on POSIX: ambiguous),
 * or names nothing.
 *
 * @internal
 */
export const pathOf = (name: string): Either.Either<string, Refusal> => {
  if (name.startsWith("/") || /^[A-Za-z]:/.test(name)) return refuse(name, "absolute name", "its name is absolute")
  if (name.includes("\0")) return refuse(name, "bad name", "its name holds a NUL byte")
  if (name.includes("\\")) return refuse(name, "bad name", "its name holds a backslash")
  const parts = name.split("/").filter((part) => part !== "" && part !== ".")
  if (parts.includes("..")) return refuse(name, "parent reference", "its name holds `..`")
  if (parts.length === 0) return refuse(name, "bad name", "its name names no file")
  return Either.right(parts.join("/"))
}

/**
 * The permissions an entry gets: a folder 0755; a file (or a hard link) its
 * own bits without setuid, setgid, sticky or group/other write, always
 * readable and writable by its owner, executable by group or others only
 * when by its owner (PEP 706's `data` filter).
 *
 * @internal
 */
export const modeOf = (entry: Entry): number => {
  if (entry.type === "directory") return 0o755
  let mode = (entry.mode & 0o777 & ~0o022) | 0o600
  if ((mode & 0o100) === 0) mode &= ~0o011
  return mode
}

const parentOf = (path: string) => {
  const at = path.lastIndexOf("/")
  return at === -1 ? "" : path.slice(0, at)
}

/**
 * The guard of one archive: `admit` each entry in the archive's order, tell
 * `unpacked` the bytes written and the archive's bytes read as they go (the
 * ratio of an archive of unknown size, and sizes a header understated), then
 * `finish` once the listing ended (links are resolved then, through every
 * link of the tree). `archiveSize`: the archive's size when known (the
 * ratio of the sizes its entries announce is then checked as they come).
 *
 * @internal
 */
export const guard = (limits: Limits, archiveSize: number | undefined) => {
  let entries = 0
  let bytes = 0
  // The paths used as folders by the entries so far (a later link or file may not take their place).
  const folders = new Set<string>()
  // Every path admitted, and the symbolic links among them (path → target as written).
  const seen = new Map<string, Entry["type"]>()
  const links = new Map<string, string>()
  const hardLinks: Array<{ readonly path: string; readonly target: string; readonly name: string }> = []

  const ratioExceeded = (unpacked: number, archive: number) =>
    refuse(
      undefined,
      "ratio",
      `the archive unpacks to more than ${limits.maxRatio} times its size (${unpacked} bytes from ${archive})`,
      "unpack_max_ratio"
    )

  const admit = (entry: Entry): Either.Either<Admitted, Refusal> => {
    entries++
    if (entries > limits.maxEntries) {
      return refuse(entry.name, "entries", `the archive has more than ${limits.maxEntries} entries`, "unpack_max_entries")
    }
    const path = pathOf(entry.name)
    if (Either.isLeft(path)) return Either.left(path.left)
    if (entry.type === "other") {
      return refuse(entry.name, "special file", `it is a ${entry.kind ?? "special file"}, not a file, a folder or a link`)
    }
    // Nothing is written through a symbolic link of the archive (`link -> /etc`, then `link/passwd`),
    // nor under a name the archive made a file.
    for (let at = parentOf(path.right); at !== ""; at = parentOf(at)) {
      if (links.has(at)) return refuse(entry.name, "through a link", `it would be written through the link ${at}`)
      const above = seen.get(at)
      if (above !== undefined && above !== "directory") {
        return refuse(entry.name, "duplicate", `the archive uses ${at} as a file and as a folder`)
      }
    }
    const before = seen.get(path.right)
    // A folder may be listed again; any other entry only once (a second one would replace the first unseen).
    if (before !== undefined && !(before === "directory" && entry.type === "directory")) {
      return refuse(entry.name, "duplicate", "the archive holds this name twice")
    }
    if (entry.type !== "directory" && folders.has(path.right)) {
      return refuse(entry.name, "duplicate", "the archive uses this name as a folder too")
    }
    if (entry.type === "file") {
      bytes += entry.size
      if (bytes > limits.maxBytes) {
        return refuse(entry.name, "bytes", `the archive unpacks to more than ${limits.maxBytes} bytes`, "unpack_max_bytes")
      }
      if (archiveSize !== undefined && bytes > limits.maxRatio * Math.max(archiveSize, 1)) {
        return Either.mapLeft(ratioExceeded(bytes, archiveSize), (refusal) => ({ ...refusal, entry: entry.name }))
      }
    }
    if (entry.type === "symlink" || entry.type === "hardlink") {
      const target = entry.target ?? ""
      if (target.startsWith("/") || /^[A-Za-z]:/.test(target)) {
        return refuse(entry.name, "absolute link", `it links to the absolute path ${target}`)
      }
      if (target === "" || target.includes("\0") || target.includes("\\")) {
        return refuse(entry.name, "bad name", "its link target is empty or holds a NUL byte or a backslash")
      }
      if (entry.type === "symlink") links.set(path.right, target)
      else hardLinks.push({ path: path.right, target, name: entry.name })
    }
    seen.set(path.right, entry.type)
    for (let at = parentOf(path.right); at !== "" && !folders.has(at); at = parentOf(at)) folders.add(at)
    return Either.right({ entry, path: path.right, mode: modeOf(entry) })
  }

  // The bytes really written so far, against the archive's bytes read so far (and the limit).
  const unpacked = (written: number, archiveRead: number): Either.Either<void, Refusal> =>
    written > limits.maxBytes
      ? refuse(undefined, "bytes", `the archive unpacks to more than ${limits.maxBytes} bytes`, "unpack_max_bytes")
      : written > limits.maxRatio * Math.max(archiveSize ?? archiveRead, 1)
      ? ratioExceeded(written, archiveSize ?? archiveRead)
      : Either.right(undefined)

  // Where a path leads inside the tree, following the archive's symbolic links (at most 40, as
  // the kernel does); undefined when it leaves the tree at any step.
  const resolve = (path: string): string | undefined => {
    const pending = path.split("/").filter((part) => part !== "" && part !== ".")
    const done: Array<string> = []
    let hops = 0
    while (pending.length > 0) {
      const part = pending.shift()!
      if (part === "..") {
        if (done.length === 0) return undefined
        done.pop()
        continue
      }
      done.push(part)
      const target = links.get(done.join("/"))
      if (target !== undefined) {
        if (++hops > 40) return undefined
        done.pop()
        pending.unshift(...target.split("/").filter((segment) => segment !== "" && segment !== "."))
      }
    }
    return done.join("/")
  }

  const finish = (): Either.Either<void, Refusal> => {
    for (const [path, target] of links) {
      const at = resolve(`${parentOf(path)}/${target}`)
      if (at === undefined) {
        return refuse(path, "link outside the tree", `it links to ${target}, which leaves the archive's tree (or loops)`)
      }
    }
    // A hard link's target is a name of the archive (from its root), which must be a file of it.
    for (const { name, path, target } of hardLinks) {
      const at = resolve(target)
      if (at === undefined) {
        return refuse(name, "link outside the tree", `it links to ${target}, which leaves the archive's tree (or loops)`)
      }
      if (at === path || seen.get(at) !== "file") {
        return refuse(name, "link to nothing", `it links to ${target}, which is no file of the archive`)
      }
    }
    return Either.right(undefined)
  }

  return { admit, unpacked, finish } as const
}
