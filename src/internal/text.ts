/**
 * A value as a message or a log line quotes it: up to 300 characters as they
 * are, a longer one cut in the middle (its start, how much was left out, its
 * end), so that a 100 KB URI or path never makes a 100 KB line. The errors'
 * fields keep the value whole.
 *
 * @internal
 */
export const cap = (value: string | undefined): string => {
  if (value === undefined) return ""
  return value.length <= 300 ? value : `${value.slice(0, 200)}…(${value.length - 280} more characters)…${value.slice(-80)}`
}
