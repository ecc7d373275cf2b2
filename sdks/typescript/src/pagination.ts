/**
 * Cursor-paginated lists (SPEC §3: `limit`, `cursor`; answers `{data, next_cursor}`).
 *
 * A list call returns a {@link PageRequest}: `await` it for the first page, or `for await` it
 * for every item of every page, fetched as the loop reads. Nothing is sent until one of the two.
 */

/** One page of a list. */
export interface Page<T> {
  data: T[];
  next_cursor?: string | null;
}

/** Fetches the page that starts at `cursor` (`undefined` for the first). */
export type PageFetcher<T> = (cursor: string | undefined) => Promise<Page<T>>;

export class PageRequest<T> implements Promise<Page<T>>, AsyncIterable<T> {
  readonly [Symbol.toStringTag] = "PageRequest";

  readonly #fetchPage: PageFetcher<T>;
  readonly #firstCursor: string | undefined;
  #firstPage: Promise<Page<T>> | undefined;

  constructor(fetchPage: PageFetcher<T>, firstCursor?: string) {
    this.#fetchPage = fetchPage;
    this.#firstCursor = firstCursor;
  }

  /** The first page (from the given cursor, if any). Awaiting twice sends one request. */
  then<A = Page<T>, B = never>(
    onFulfilled?: ((page: Page<T>) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    this.#firstPage ??= this.#fetchPage(this.#firstCursor);
    return this.#firstPage.then(onFulfilled, onRejected);
  }

  catch<B = never>(onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null): Promise<Page<T> | B> {
    return this.then(undefined, onRejected);
  }

  finally(onFinally?: (() => void) | null): Promise<Page<T>> {
    return this.then().finally(onFinally);
  }

  /** Every page, in order, ending after the one without a `next_cursor`. Each call starts afresh. */
  async *pages(): AsyncGenerator<Page<T>, void, undefined> {
    let page = await this.#fetchPage(this.#firstCursor);
    yield page;
    while (page.next_cursor) {
      page = await this.#fetchPage(page.next_cursor);
      yield page;
    }
  }

  /** Every item of every page. */
  async *[Symbol.asyncIterator](): AsyncGenerator<T, void, undefined> {
    for await (const page of this.pages()) yield* page.data;
  }

  /** Every item, collected; mind the size of what you list. */
  async toArray(): Promise<T[]> {
    const items: T[] = [];
    for await (const item of this) items.push(item);
    return items;
  }
}
