// The one way every Locus command line ends: main's exit code, or "NAME: message" and exit 1
// for any error (errors carry the file, record or field they are about; no stack traces).

export async function runMain(
  name: string,
  main: (argv: string[]) => Promise<number | void>,
): Promise<never> {
  try {
    Deno.exit((await main(Deno.args)) ?? 0);
  } catch (e) {
    console.error(`${name}: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
