/** `muser lspci`: placeholder until the decoder lands. */
export async function lspci(path: string): Promise<string> {
  throw new Error(`lspci for ${path} is not implemented yet`);
}
