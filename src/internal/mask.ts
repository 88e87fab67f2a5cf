import * as Either from "effect/Either"

/**
 * mlup's default `file_mask`.
 *
 * @internal
 */
export const defaultMask = String.raw`(\w.-_)*.pckl`

/**
 * Compiles a mask written for Python's `re` (as mlup configs are) into a
 * JavaScript RegExp. The syntax the two share passes through unchanged; the
 * Python-only forms that have a JavaScript equivalent are translated:
 * `(?P<name>…)` → `(?<name>…)`, `(?P=name)` → `\k<name>`, `\A` → `^`,
 * `\Z` → `$`, and leading inline flags `(?i)`, `(?m)`, `(?s)` become RegExp
 * flags (`(?a)`, `(?u)` and `(?L)` are accepted and ignored).
 *
 * @internal
 */
export const compile = (source: string): Either.Either<RegExp, string> => {
  const flags = new Set<string>()
  let rest = source
  const inline = /^\(\?([aiLmsux]+)\)/.exec(rest)
  if (inline !== null) {
    for (const flag of inline[1]!) {
      if (flag === "x") return Either.left("the verbose flag (?x) is not supported")
      if (flag === "i" || flag === "m" || flag === "s") flags.add(flag)
    }
    rest = rest.slice(inline[0].length)
  }
  let out = ""
  let inClass = false
  for (let i = 0; i < rest.length; i++) {
    const char = rest[i]!
    if (char === "\\") {
      const next = rest[i + 1]
      if (!inClass && next === "A") out += "^"
      else if (!inClass && next === "Z") out += "$"
      else out += char + (next ?? "")
      i++
    } else if (inClass) {
      if (char === "]") inClass = false
      out += char
    } else if (char === "[") {
      inClass = true
      out += char
      // A "]" right after "[" or "[^" is a literal in both dialects; JavaScript needs it escaped.
      if (rest[i + 1] === "^") {
        out += "^"
        i++
      }
      if (rest[i + 1] === "]") {
        out += "\\]"
        i++
      }
    } else if (rest.startsWith("(?P<", i)) {
      out += "(?<"
      i += 3
    } else if (rest.startsWith("(?P=", i)) {
      const end = rest.indexOf(")", i)
      if (end === -1) return Either.left("unterminated (?P=name) reference")
      out += `\\k<${rest.slice(i + 4, end)}>`
      i = end
    } else {
      out += char
    }
  }
  try {
    return Either.right(new RegExp(out, [...flags].join("")))
  } catch (error) {
    return Either.left(error instanceof Error ? error.message : String(error))
  }
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
