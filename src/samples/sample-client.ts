/** The sample client: placeholder until migration lands. */
export async function runSampleClient(path: string, _o: { verbose: boolean }): Promise<void> {
  throw new Error(`sample-client for ${path} is not implemented yet`);
}
