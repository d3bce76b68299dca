//! Catalog hot paths: loading a large catalog, `get_product_info`, and paging through
//! `get_developer_products()`.
//!
//! ```sh
//! cargo bench --bench catalog
//! ```

use std::time::SystemTime;

use bevy_marketplace::{Catalog, CatalogIndex, PAGE_SIZE, Pages, ProductId};
use divan::counter::ItemsCount;
use divan::{Bencher, black_box};

const SIZES: [usize; 3] = [100, 10_000, 100_000];

fn main() {
    divan::main();
}

fn catalog_text(n: usize) -> String {
    let mut text = String::from("(products: [\n");
    for i in 0..n {
        text.push_str(&format!(
            "  (id: {}, name: \"Product {i}\", description: \"A product for the benchmark.\", price: {}, icon: \"icons/p{i}.png\", category: \"Cat {}\"),\n",
            i + 1,
            1 + i % 1000,
            i % 20
        ));
    }
    text.push_str("])\n");
    text
}

fn index(n: usize) -> CatalogIndex {
    let catalog = Catalog::from_ron_str(&catalog_text(n), "bench.ron").unwrap();
    CatalogIndex::build(&catalog, None, SystemTime::now())
}

/// Parse, validate and index a RON catalog of `n` products.
#[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
fn load(bencher: Bencher, n: usize) {
    let text = catalog_text(n);
    // Both are returned so that divan frees them outside the timing.
    bencher.counter(ItemsCount::new(n)).bench_local(|| {
        let catalog = Catalog::from_ron_str(black_box(&text), "bench.ron").unwrap();
        let index = CatalogIndex::build(&catalog, None, SystemTime::now());
        (catalog, index)
    });
}

/// One `get_product_info`-style lookup by id (the service clones the found `ProductInfo`).
#[divan::bench(args = SIZES)]
fn lookup(bencher: Bencher, n: usize) {
    let index = index(n);
    let mut id = 0;
    bencher.bench_local(|| {
        id = id % n as i64 + 1;
        index.get(black_box(ProductId(id))).cloned()
    });
}

/// A lookup of an id that is not in the catalog (the error path of `get_product_info`).
#[divan::bench]
fn lookup_unknown(bencher: Bencher) {
    let index = index(10_000);
    bencher.bench_local(|| index.get(black_box(ProductId(-7))).is_none());
}

/// Read every page of `get_developer_products()` (`PAGE_SIZE` products a page).
#[divan::bench(args = SIZES)]
fn page_all(bencher: Bencher, n: usize) {
    let index = index(n);
    bencher
        .counter(ItemsCount::new(n.div_ceil(PAGE_SIZE)))
        .bench_local(|| {
            let mut pages = Pages::new(index.products().clone(), PAGE_SIZE);
            let mut seen = 0;
            loop {
                seen += black_box(pages.current_page()).len();
                if pages.is_finished() {
                    break seen;
                }
                pages.advance_to_next_page().unwrap();
            }
        });
}
