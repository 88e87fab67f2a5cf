import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { Worker } from "node:worker_threads"
import * as StorageError from "../StorageError.js"

/**
 * mlup's default `file_mask`.
 *
 * @internal
 */
export const defaultMask = String.raw`(\w.-_)*.pckl`

/**
 * The longest mask accepted (characters). Longer ones are refused up front:
 * V8 dies on patterns of some tens of thousands of characters.
 *
 * @internal
 */
export const maxMaskLength = 4096

// Python 3's classes for str patterns (Unicode):
// \w: str.isalnum() or "_": letters (L*) and numbers (Nd, Nl, No); not marks.
// \d: decimal digits (Nd). \s: str.isspace().
const WORD = String.raw`\p{L}\p{N}_`
const DIGIT = String.raw`\p{Nd}`
const SPACE = String.raw`\t\n\x0B\f\r\x1C-\x20\x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000`
// With the ASCII flag (?a): ASCII only.
const ASCII_WORD = "A-Za-z0-9_"
const ASCII_DIGIT = "0-9"
const ASCII_SPACE = String.raw`\t\n\x0B\f\r `

/** A character as a JavaScript `u`-mode escape, whatever it is. */
const literal = (char: string): string => `\\u{${char.codePointAt(0)!.toString(16)}}`

const hex = /^[0-9a-fA-F]+$/

/**
 * Where the character class that opens at `at` (a "[") ends: the index of its
 * "]" (a "]" first in the class, after an optional "^", is a literal).
 */
const classEnd = (source: string, at: number): number | undefined => {
  let j = at + 1
  if (source[j] === "^") j++
  if (source[j] === "]") j++
  for (; j < source.length; j++) {
    if (source[j] === "\\") j++
    else if (source[j] === "]") return j
  }
  return undefined
}

/** The index of the ")" that closes the group opening at `at` (escapes and classes skipped). */
const closingParen = (source: string, at: number): number | undefined => {
  let depth = 0
  for (let j = at; j < source.length; j++) {
    const c = source[j]
    if (c === "\\") j++
    else if (c === "[") {
      const end = classEnd(source, j)
      if (end === undefined) return undefined
      j = end
    } else if (c === "(") depth++
    else if (c === ")" && --depth === 0) return j
  }
  return undefined
}

/**
 * How many characters a pattern (Python syntax) always matches, or
 * `undefined` when that varies: the test Python's `re` applies to a
 * look-behind. Alternatives must agree; `*`, `+`, `?` and `{m,n}` with m ≠ n
 * vary; a group reference varies.
 *
 * @internal
 */
export const widthOf = (pattern: string): number | undefined => {
  const alternatives: Array<number | undefined> = []
  let total: number | undefined = 0
  let last: number | undefined = 0 // the width of the last atom, for a quantifier after it
  for (let i = 0; i < pattern.length;) {
    const c = pattern[i]!
    let atom: number | undefined
    let length = 1
    if (c === "|") {
      alternatives.push(total)
      total = 0
      last = 0
      i++
      continue
    } else if (c === "\\") {
      const next = pattern[i + 1] ?? ""
      if ("bBAZ".includes(next)) atom = 0
      else if (/[1-9]/.test(next)) atom = undefined
      else atom = 1
      length = next === "x" ? 4 : next === "u" ? 6 : next === "U" ? 10 : next === "0" ? (/^0[0-7]{0,2}/.exec(pattern.slice(i + 1))![0].length + 1) : 2
    } else if (c === "[") {
      const end = classEnd(pattern, i)
      if (end === undefined) return undefined
      atom = 1
      length = end + 1 - i
    } else if (c === "(") {
      const end = closingParen(pattern, i)
      if (end === undefined) return undefined
      const inner = pattern.slice(i + 1, end)
      atom = /^\?(=|!|<=|<!|#)/.test(inner)
        ? 0
        : /^\?P=/.test(inner)
        ? undefined
        : widthOf(inner.replace(/^\?(:|P<[^>]*>|[aimsux-]+:)/, ""))
      length = end + 1 - i
    } else if (c === "^" || c === "$") {
      atom = 0
    } else if (c === "*" || c === "+" || c === "?") {
      // A quantifier on the last atom (a lazy "?" after one changes nothing more).
      if (c === "?" && i > 0 && "*+?}".includes(pattern[i - 1]!)) {
        i++
        continue
      }
      if (last !== 0) total = undefined
      i++
      continue
    } else if (c === "{") {
      const repeat = /^\{(\d*)(?:(,)(\d*))?\}/.exec(pattern.slice(i))
      if (repeat !== null && (repeat[1] !== "" || repeat[2] !== undefined)) {
        const [whole, low = "", comma, high = ""] = repeat
        const fixed = comma === undefined ? Number(low) : low !== "" && low === high ? Number(low) : undefined
        total = total === undefined || last === undefined || fixed === undefined ? (last === 0 ? total : undefined) : total - last + last * fixed
        i += whole.length
        continue
      }
      atom = 1
    } else {
      atom = 1
    }
    total = total === undefined || atom === undefined ? undefined : total + atom
    last = atom
    i += length
  }
  alternatives.push(total)
  const first = alternatives[0]
  return alternatives.every((width) => width !== undefined && width === first) ? first : undefined
}

/**
 * Compiles a mask written for Python's `re` (as mlup configs are) into a
 * JavaScript RegExp that selects the same names: every construct either
 * means what it means in Python (translated where JavaScript differs: `\w`,
 * `\d`, `\s`, `\b` and their negations are Unicode as in Python 3, `.` stops
 * at `\n` only, `$` also matches before a final `\n`, `{,n}` is `{0,n}`, a
 * `{` that starts no repetition is literal, `(?P<name>…)`, `(?P=name)`,
 * `\A`, `\Z`, `\U…`, leading flags `(?aimsu)`, comments `(?#…)`) or is
 * refused with a message that names it (scoped flags `(?i:…)`, atomic
 * groups, possessive quantifiers, conditionals, `\N{…}`, verbose mode, the
 * locale flag, `\W` / `\D` / `\S` inside a class, JavaScript-only syntax
 * such as `(?<name>…)` and `\k<name>`).
 *
 * @internal
 */
export const compile = (source: string): Either.Either<RegExp, string> => {
  if (source.length > maxMaskLength) {
    return Either.left(`is ${source.length} characters long: ${maxMaskLength} at most`)
  }
  const flags = new Set<string>()
  let rest = source
  // Global flags: Python 3.11 takes them only at the start.
  for (let inline = /^\(\?([a-zA-Z]+)\)/.exec(rest); inline !== null; inline = /^\(\?([a-zA-Z]+)\)/.exec(rest)) {
    for (const flag of inline[1]!) {
      if (flag === "x") return Either.left("uses the verbose flag (?x), which is not supported")
      if (flag === "L") return Either.left("uses the locale flag (?L), which Python refuses for text patterns")
      if (!"aimsu".includes(flag)) return Either.left(`uses an unknown flag (?${flag})`)
      flags.add(flag)
    }
    rest = rest.slice(inline[0].length)
  }
  const ascii = flags.has("a")
  const word = ascii ? ASCII_WORD : WORD
  const digit = ascii ? ASCII_DIGIT : DIGIT
  const space = ascii ? ASCII_SPACE : SPACE
  const boundary = `(?:(?<=[${word}])(?![${word}])|(?<![${word}])(?=[${word}]))`
  // Python's \B never matches in an empty string.
  const notBoundary = `(?:(?<=[${word}])(?=[${word}])|(?<![${word}])(?![${word}])(?:(?<=[\\s\\S])|(?=[\\s\\S])))`

  let out = ""
  let i = 0
  const refuse = (what: string) => Either.left(`uses ${what}, which this library does not support (Python's re does)`)

  // An escape shared by both contexts (after the backslash at `at`): the
  // translation and how many characters it used, or a refusal.
  const commonEscape = (at: number, inClass: boolean): Either.Either<{ text: string; length: number }, string> => {
    const next = rest[at + 1]
    if (next === undefined) return Either.left("ends with a lone backslash")
    const fixed = (length: number, digits: string, radix: number) =>
      digits.length === length && hex.test(digits)
        ? Either.right({ text: `\\u{${parseInt(digits, radix).toString(16)}}`, length: length + 2 })
        : Either.left(`has an incomplete escape \\${next}${digits}`)
    switch (next) {
      case "x":
        return fixed(2, rest.slice(at + 2, at + 4), 16)
      case "u":
        return fixed(4, rest.slice(at + 2, at + 6), 16)
      case "U":
        return fixed(8, rest.slice(at + 2, at + 10), 16)
      case "N":
        return Either.left("uses a named character \\N{…}, which is not supported: write the character itself")
      case "a":
        return Either.right({ text: "\\x07", length: 2 })
      case "f":
      case "n":
      case "r":
      case "t":
      case "v":
        return Either.right({ text: `\\${next}`, length: 2 })
      case "w":
        return Either.right({ text: inClass ? word : `[${word}]`, length: 2 })
      case "d":
        return Either.right({ text: inClass ? digit : `[${digit}]`, length: 2 })
      case "s":
        return Either.right({ text: inClass ? space : `[${space}]`, length: 2 })
    }
    if (next === "0" || (inClass && /[1-7]/.test(next))) {
      // An octal escape: up to three octal digits.
      const digits = /^[0-7]{1,3}/.exec(rest.slice(at + 1))![0]
      return Either.right({ text: `\\u{${parseInt(digits, 8).toString(16)}}`, length: digits.length + 1 })
    }
    if (/[a-zA-Z]/.test(next)) return Either.left(`has a bad escape \\${next} (Python refuses it too)`)
    if (/[0-9]/.test(next)) return Either.left("has a bad escape") // handled by the caller outside classes
    return Either.right({ text: literal(next), length: 2 })
  }

  while (i < rest.length) {
    const char = rest[i]!
    if (char === "\\") {
      const next = rest[i + 1]
      if (next === "A") {
        out += "^"
        i += 2
      } else if (next === "Z") {
        out += "$"
        i += 2
      } else if (next === "b") {
        out += boundary
        i += 2
      } else if (next === "B") {
        out += notBoundary
        i += 2
      } else if (next === "W") {
        out += `[^${word}]`
        i += 2
      } else if (next === "D") {
        out += `[^${digit}]`
        i += 2
      } else if (next === "S") {
        out += `[^${space}]`
        i += 2
      } else if (next !== undefined && /[1-9]/.test(next)) {
        // A back-reference (\1 … \99); three digits, or a leading 0, would be octal.
        const digits = /^[0-9]{1,3}/.exec(rest.slice(i + 1))![0]
        if (digits.length === 3 && /^[0-7]{3}$/.test(digits)) {
          out += `\\u{${parseInt(digits, 8).toString(16)}}`
          i += 4
        } else {
          const reference = digits.slice(0, 2)
          out += `(?:\\${reference})`
          i += 1 + reference.length
        }
      } else {
        const escaped = commonEscape(i, false)
        if (Either.isLeft(escaped)) return Either.left(escaped.left)
        out += escaped.right.text
        i += escaped.right.length
      }
    } else if (char === "[") {
      // A character class: up to the first "]" that is not its first character.
      let j = i + 1
      let body = ""
      if (rest[j] === "^") {
        body += "^"
        j++
      }
      let first = true
      for (; j < rest.length; j++) {
        const c = rest[j]!
        if (c === "]" && !first) break
        first = false
        if (c === "\\") {
          const next = rest[j + 1]
          if (next === "b") {
            body += "\\x08"
            j++
            continue
          }
          if (next === "W" || next === "D" || next === "S") {
            return refuse(`\\${next} inside a character class`)
          }
          if (next === "A" || next === "Z" || next === "B") {
            return Either.left(`has a bad escape \\${next} inside a character class (Python refuses it too)`)
          }
          const escaped = commonEscape(j, true)
          if (Either.isLeft(escaped)) return Either.left(escaped.left)
          body += escaped.right.text
          j += escaped.right.length - 1
        } else if (c === "-") {
          body += "-"
        } else if (/[\p{L}\p{N}_ ]/u.test(c)) {
          body += c
        } else {
          body += literal(c)
        }
      }
      if (j >= rest.length) return Either.left("has an unterminated character class [")
      out += `[${body}]`
      i = j + 1
    } else if (char === "(") {
      if (rest.startsWith("(?P<", i)) {
        out += "(?<"
        i += 4
      } else if (rest.startsWith("(?P=", i)) {
        const end = rest.indexOf(")", i)
        if (end === -1) return Either.left("has an unterminated (?P=name) reference")
        out += `\\k<${rest.slice(i + 4, end)}>`
        i = end + 1
      } else if (rest.startsWith("(?#", i)) {
        const end = rest.indexOf(")", i)
        if (end === -1) return Either.left("has an unterminated comment (?#…")
        i = end + 1
      } else if (rest.startsWith("(?:", i) || rest.startsWith("(?=", i) || rest.startsWith("(?!", i)) {
        out += rest.slice(i, i + 3)
        i += 3
      } else if (rest.startsWith("(?<=", i) || rest.startsWith("(?<!", i)) {
        // Python's look-behind takes a pattern of one width only; JavaScript's takes any.
        const end = closingParen(rest, i)
        if (end !== undefined && widthOf(rest.slice(i + 4, end)) === undefined) {
          return Either.left(
            `has a look-behind of variable width ${rest.slice(i, Math.min(end + 1, i + 40))}, which Python refuses ` +
              "(look-behind requires fixed-width pattern)"
          )
        }
        out += rest.slice(i, i + 4)
        i += 4
      } else if (rest.startsWith("(?>", i)) {
        return refuse("an atomic group (?>…)")
      } else if (rest.startsWith("(?(", i)) {
        return refuse("a conditional group (?(…)…)")
      } else if (rest.startsWith("(?<", i)) {
        return Either.left("uses (?<name>…), which is not Python syntax: write (?P<name>…)")
      } else if (/^\(\?[a-zA-Z-]+[:)]/.test(rest.slice(i))) {
        return refuse(`scoped or misplaced flags ${/^\(\?[a-zA-Z-]+[:)]/.exec(rest.slice(i))![0]}…`)
      } else if (rest[i + 1] === "?") {
        return Either.left(`has an unknown extension ${rest.slice(i, i + 3)}`)
      } else {
        out += "("
        i++
      }
    } else if (char === "{") {
      const repeat = /^\{(\d*)(?:(,)(\d*))?\}/.exec(rest.slice(i))
      if (repeat !== null && (repeat[1] !== "" || repeat[2] !== undefined)) {
        const [whole, low, comma, high] = repeat
        if (comma !== undefined && low !== "" && high !== "" && Number(low) > Number(high)) {
          return Either.left("has a repetition whose minimum is greater than its maximum")
        }
        out += comma === undefined ? `{${low}}` : `{${low === "" ? "0" : low},${high}}`
        i += whole.length
        if (rest[i] === "+") return refuse(`a possessive quantifier ${whole}+`)
      } else {
        out += "\\{"
        i++
      }
    } else if (char === "}") {
      out += "\\}"
      i++
    } else if (char === ".") {
      out += flags.has("s") ? "[\\s\\S]" : "[^\\n]"
      i++
    } else if (char === "^") {
      out += flags.has("m") ? "(?:^|(?<=\\n))" : "^"
      i++
    } else if (char === "$") {
      out += flags.has("m") ? "(?=\\n|$)" : "(?=\\n?$)"
      i++
    } else if (char === "]") {
      out += "\\]"
      i++
    } else if ((char === "*" || char === "+" || char === "?") && rest[i + 1] === "+") {
      return refuse(`a possessive quantifier ${char}+`)
    } else {
      out += char
      i++
    }
  }
  try {
    const regexp = new RegExp(out, flags.has("i") ? "iu" : "u")
    written.set(regexp, source)
    return Either.right(regexp)
  } catch (error) {
    return Either.left(error instanceof Error ? error.message.replace(/^Invalid regular expression: /, "") : String(error))
  }
}

/** The masks as they were written (a compiled RegExp's source is the translation). */
const written = new WeakMap<RegExp, string>()

/**
 * A mask as its user wrote it: the Python source of a compiled mask, or a
 * RegExp's own source.
 *
 * @internal
 */
export const sourceOf = (regexp: RegExp): string => written.get(regexp) ?? regexp.source

/**
 * A RegExp shown as `text` in messages (a mask made by the library from the
 * user's: the archives it also lets through, say).
 *
 * @internal
 */
export const shownAs = (regexp: RegExp, text: string): RegExp => {
  written.set(regexp, text)
  return regexp
}

/**
 * A RegExp given in code, made safe for repeated `test` calls (no `g`/`y`
 * state).
 *
 * @internal
 */
export const fromRegExp = (regexp: RegExp): RegExp =>
  regexp.global || regexp.sticky ? new RegExp(regexp.source, regexp.flags.replace(/[gy]/g, "")) : regexp

/**
 * mlup's default mask, compiled.
 *
 * @internal
 */
export const compileDefault = (): RegExp => Either.getOrThrow(compile(defaultMask))

/**
 * Whether a mask may backtrack catastrophically: a repetition (`*`, `+`,
 * `{…}`) of a group that itself repeats or alternates (`(a+)+`, `(a|aa)*`),
 * or a back-reference. Such masks are matched off the event loop, bounded.
 *
 * @internal
 */
export const mayBacktrack = (source: string): boolean => {
  const groups: Array<{ risky: boolean }> = []
  let previousGroupRisky = false
  for (let i = 0; i < source.length; i++) {
    const char = source[i]!
    const repeats = char === "*" || char === "+" || (char === "{" && /^\{\d*,?\d*\}/.test(source.slice(i)))
    if (repeats) {
      if (previousGroupRisky) return true
      if (groups.length > 0) groups[groups.length - 1]!.risky = true
    }
    previousGroupRisky = false
    if (char === "\\") {
      if (/[1-9]/.test(source[i + 1] ?? "") || source.startsWith("(?P=", i)) return true
      i++
    } else if (char === "[") {
      const end = source.indexOf("]", i + 2)
      i = end === -1 ? source.length : end
    } else if (char === "(") {
      if (source.startsWith("(?P=", i)) return true
      groups.push({ risky: false })
    } else if (char === "|") {
      if (groups.length > 0) groups[groups.length - 1]!.risky = true
    } else if (char === ")") {
      const group = groups.pop()
      previousGroupRisky = group?.risky ?? false
      if (previousGroupRisky && groups.length > 0) groups[groups.length - 1]!.risky = true
    }
  }
  return false
}

/** Matches names in a worker thread, which a timeout or an interruption terminates. */
const workerCode = `
const { parentPort, workerData } = require("node:worker_threads")
const regexp = new RegExp(workerData.source, workerData.flags)
parentPort.postMessage(workerData.names.map((name) => regexp.test(name)))
`

/**
 * The names a mask selects. A mask that may backtrack catastrophically is
 * matched in a worker thread, so that it never blocks the process: after
 * `timeout` (or when interrupted) the worker is terminated, and a timeout is
 * `InvalidStorageOptions` naming `field`.
 *
 * @internal
 */
export const select = (
  regexp: RegExp,
  names: ReadonlyArray<string>,
  options: { readonly storageType: string; readonly field: string; readonly timeout?: Duration.DurationInput }
): Effect.Effect<Array<string>, StorageError.InvalidStorageOptions> => {
  const source = sourceOf(regexp)
  if (names.length === 0 || !mayBacktrack(source)) return Effect.sync(() => names.filter((name) => regexp.test(name)))
  const timeout = Duration.decode(options.timeout ?? "10 seconds")
  return Effect.async<Array<boolean>>((resume) => {
    const worker = new Worker(workerCode, {
      eval: true,
      workerData: { source: regexp.source, flags: regexp.flags, names }
    })
    worker.once("message", (flags: Array<boolean>) => resume(Effect.succeed(flags)))
    worker.once("error", (error) => resume(Effect.die(error)))
    return Effect.promise(() => worker.terminate())
  }).pipe(
    Effect.timeoutFail({
      duration: timeout,
      onTimeout: () =>
        new StorageError.InvalidStorageOptions({
          storageType: options.storageType,
          issues: [
            new StorageError.OptionIssue({
              field: options.field,
              problem: `took more than ${Duration.format(timeout)} to match ${names.length} name(s) (it backtracks ` +
                `catastrophically, as (a+)+$ does): write it without a repetition of a repetition`
            })
          ]
        })
    }),
    Effect.map((flags) => names.filter((_, i) => flags[i]))
  )
}
