//! The demo catalogue for `just up` and walkthroughs: about fifty products in several
//! categories, some with Chinese names and descriptions. Seeding skips products whose name is
//! already in the catalogue, so running it twice does not duplicate anything.

use rusqlite::Connection;

use crate::domain::{self, NewProduct};
use crate::error::Error;
use crate::store;

/// (category, name, price in cents, stock, description).
pub const CATALOGUE: &[(&str, &str, i64, i64, &str)] = &[
    (
        "electronics",
        "苹果手机 iPhone 15",
        599_900,
        25,
        "Apple iPhone 15，128GB，A16 仿生芯片，4800 万像素主摄。",
    ),
    (
        "electronics",
        "华为 Mate 60 Pro 手机",
        699_900,
        15,
        "华为旗舰手机，卫星通话，昆仑玻璃，5000mAh 电池。",
    ),
    (
        "electronics",
        "小米 14 智能手机",
        399_900,
        40,
        "徕卡光学镜头，骁龙 8 Gen 3，120W 快充。",
    ),
    (
        "electronics",
        "Wireless Noise-Cancelling Headphones",
        29_900,
        60,
        "Over-ear Bluetooth headphones with 30-hour battery and active noise cancelling.",
    ),
    (
        "electronics",
        "USB-C Charger 65W",
        3_999,
        200,
        "Compact GaN charger with two USB-C ports and one USB-A port.",
    ),
    (
        "electronics",
        "Mechanical Keyboard, 87 keys",
        8_900,
        75,
        "Tenkeyless mechanical keyboard with hot-swappable brown switches.",
    ),
    (
        "electronics",
        "机械键盘 104 键 青轴",
        45_900,
        30,
        "全尺寸机械键盘，RGB 背光，可拆卸 USB-C 线。",
    ),
    (
        "electronics",
        "27-inch 4K Monitor",
        32_900,
        20,
        "IPS panel, 60 Hz, USB-C with 65 W power delivery, height-adjustable stand.",
    ),
    (
        "electronics",
        "Portable SSD 1TB",
        10_900,
        90,
        "Pocket-sized external drive, up to 1050 MB/s over USB 3.2.",
    ),
    (
        "electronics",
        "蓝牙音箱 便携防水",
        19_900,
        55,
        "IPX7 防水，360° 环绕立体声，续航 12 小时。",
    ),
    (
        "books",
        "The Rust Programming Language",
        3_995,
        120,
        "The official book on Rust: ownership, traits, concurrency and more.",
    ),
    (
        "books",
        "Designing Data-Intensive Applications",
        4_499,
        80,
        "The big ideas behind reliable, scalable and maintainable systems.",
    ),
    (
        "books",
        "三体",
        2_380,
        150,
        "刘慈欣科幻小说，雨果奖获奖作品，地球文明与三体文明的故事。",
    ),
    (
        "books",
        "活着",
        2_800,
        100,
        "余华代表作，讲述一个人和他命运之间的友情。",
    ),
    (
        "books",
        "Database Internals",
        4_999,
        40,
        "A deep dive into how distributed data systems work.",
    ),
    (
        "books",
        "红楼梦（典藏版）",
        8_800,
        35,
        "中国古典四大名著之一，精装典藏版。",
    ),
    (
        "books",
        "The Pragmatic Programmer",
        3_999,
        70,
        "Your journey to mastery, 20th anniversary edition.",
    ),
    (
        "home",
        "Cast Iron Skillet 26 cm",
        3_499,
        45,
        "Pre-seasoned cast iron pan for stovetop, oven and campfire.",
    ),
    (
        "home",
        "保温杯 500ml 不锈钢",
        12_900,
        200,
        "316 不锈钢内胆，保温 12 小时，防漏设计。",
    ),
    (
        "home",
        "Electric Kettle 1.7 L",
        2_999,
        80,
        "Stainless steel kettle with auto shut-off and boil-dry protection.",
    ),
    (
        "home",
        "小米空气净化器 4",
        89_900,
        18,
        "高效 HEPA 滤网，适用面积 48 平方米，APP 智能控制。",
    ),
    (
        "home",
        "Cotton Bath Towel Set",
        4_500,
        60,
        "Set of four 600 gsm cotton towels.",
    ),
    (
        "home",
        "LED Desk Lamp",
        2_599,
        110,
        "Dimmable desk lamp with five colour temperatures and USB charging port.",
    ),
    (
        "home",
        "电饭煲 智能 4L",
        39_900,
        25,
        "IH 电磁加热，24 小时预约，多种烹饪模式。",
    ),
    (
        "home",
        "French Press Coffee Maker",
        2_799,
        65,
        "1 litre borosilicate glass French press with stainless filter.",
    ),
    (
        "clothing",
        "Merino Wool Sweater",
        8_900,
        50,
        "Fine-knit crew neck sweater in 100% merino wool.",
    ),
    (
        "clothing",
        "羽绒服 男款 轻薄",
        59_900,
        40,
        "90% 白鸭绒，轻薄保暖，可收纳。",
    ),
    (
        "clothing",
        "Classic Denim Jacket",
        6_900,
        35,
        "Medium-wash denim jacket with button front.",
    ),
    (
        "clothing",
        "Running Socks, 3 pairs",
        1_499,
        300,
        "Cushioned, breathable running socks.",
    ),
    (
        "clothing",
        "真丝围巾",
        29_900,
        20,
        "100% 桑蚕丝，手工卷边，多色可选。",
    ),
    (
        "clothing",
        "Waterproof Rain Jacket",
        11_900,
        30,
        "Lightweight, packable shell with taped seams.",
    ),
    (
        "sports",
        "Yoga Mat 6 mm",
        2_999,
        90,
        "Non-slip TPE yoga mat with carrying strap.",
    ),
    (
        "sports",
        "Adjustable Dumbbells 2 x 24 kg",
        34_900,
        10,
        "Dial-adjustable dumbbells replacing fifteen sets of weights.",
    ),
    (
        "sports",
        "羽毛球拍 碳纤维",
        26_800,
        45,
        "全碳素羽毛球拍，进攻型，附拍套。",
    ),
    (
        "sports",
        "Road Bike Helmet",
        7_900,
        40,
        "Lightweight ventilated helmet with MIPS protection.",
    ),
    (
        "sports",
        "跑步鞋 缓震",
        49_900,
        60,
        "轻量缓震跑鞋，透气网面，适合长距离训练。",
    ),
    (
        "sports",
        "Camping Tent, 2-person",
        15_900,
        15,
        "Three-season dome tent, 2.1 kg, setup in five minutes.",
    ),
    (
        "sports",
        "Stainless Steel Water Bottle 750 ml",
        2_499,
        150,
        "Double-wall insulated bottle, keeps drinks cold for 24 hours.",
    ),
    (
        "food",
        "西湖龙井 明前特级 250g",
        38_800,
        25,
        "杭州西湖龙井茶，明前采摘，豆香浓郁。",
    ),
    (
        "food",
        "Single-Origin Coffee Beans 1 kg",
        3_200,
        80,
        "Ethiopian Yirgacheffe, light roast, notes of citrus and jasmine.",
    ),
    (
        "food",
        "Dark Chocolate 85%, 10 bars",
        2_500,
        120,
        "Bean-to-bar dark chocolate made from Peruvian cacao.",
    ),
    (
        "food",
        "五常大米 5kg",
        8_900,
        100,
        "黑龙江五常稻花香大米，当季新米。",
    ),
    (
        "food",
        "Extra Virgin Olive Oil 1 L",
        1_899,
        90,
        "Cold-pressed olive oil from Andalusia.",
    ),
    (
        "food",
        "云南普洱茶饼 357g",
        16_800,
        30,
        "勐海古树普洱熟茶，七子饼。",
    ),
    (
        "food",
        "Manuka Honey 500 g",
        4_200,
        40,
        "New Zealand manuka honey, MGO 263+.",
    ),
    (
        "beauty",
        "Vitamin C Serum 30 ml",
        2_400,
        70,
        "15% vitamin C face serum with hyaluronic acid.",
    ),
    (
        "beauty",
        "防晒霜 SPF50+",
        18_900,
        80,
        "清爽不油腻，防水防汗，适合户外运动。",
    ),
    (
        "beauty",
        "Electric Toothbrush",
        6_900,
        55,
        "Sonic toothbrush with three modes and a two-minute timer.",
    ),
    (
        "beauty",
        "洗面奶 氨基酸",
        8_900,
        120,
        "温和氨基酸洁面，适合敏感肌。",
    ),
    (
        "beauty",
        "Hair Dryer 1800 W",
        5_900,
        35,
        "Ionic hair dryer with three heat and two speed settings.",
    ),
];

/// What a seed run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeded {
    pub created: usize,
    pub skipped: usize,
}

/// Inserts every catalogue product whose name is not already there. Run it in a transaction
/// (`shop_kit::db::in_transaction`): all of the catalogue or none.
pub fn seed(conn: &Connection, now: i64) -> Result<Seeded, Error> {
    let mut out = Seeded {
        created: 0,
        skipped: 0,
    };
    for (category, name, price, stock, description) in CATALOGUE {
        let exists: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM products WHERE name = ?1 AND deleted_at IS NULL)",
            [name],
            |r| r.get(0),
        )?;
        if exists {
            out.skipped += 1;
            continue;
        }
        let new: NewProduct = domain::check_new(name, description, *price, *stock, category)?;
        store::create(conn, &new, now)?;
        out.created += 1;
    }
    Ok(out)
}

/// Generated products are written this many to a transaction (and progress told as often).
pub const GENERATED_REPORT: u64 = GENERATED_BATCH;
const GENERATED_BATCH: u64 = 10_000;

/// Adds `count` generated products (see [`crate::generate`]), one minute apart and ending at
/// `now`, in transactions of [`GENERATED_BATCH`]; `progress` hears how many are written so far.
/// Each gets its stock ledger row, as a product made through the API does.
pub fn generated(
    conn: &mut Connection,
    count: u64,
    now: i64,
    mut progress: impl FnMut(u64),
) -> Result<u64, Error> {
    let mut done = 0;
    while done < count {
        let end = (done + GENERATED_BATCH).min(count);
        shop_kit::db::in_transaction(conn, |c| {
            let mut product = c.prepare_cached(
                "INSERT INTO products (name, description, price_cents, stock, category, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            )?;
            let mut ledger = c.prepare_cached(
                "INSERT INTO stock_moves (product_id, delta, reason, order_id, at) VALUES (?1, ?2, 'create', NULL, ?3)",
            )?;
            for i in done..end {
                let p = crate::generate::product(i);
                let minutes_before = i64::try_from(count - i).unwrap_or(i64::MAX);
                let at = now.saturating_sub(minutes_before.saturating_mul(60_000));
                product.execute(rusqlite::params![
                    p.name,
                    p.description,
                    p.price_cents,
                    p.stock,
                    p.category,
                    at
                ])?;
                let id = c.last_insert_rowid();
                ledger.execute(rusqlite::params![id, p.stock, at])?;
                crate::listing::index(c, id, &p.name, &p.description)?;
            }
            Ok::<_, Error>(())
        })?;
        done = end;
        progress(done);
    }
    // A bulk load leaves the search index in many segments, each of which every term lookup
    // must visit; merged into one, a lookup seeks once.
    conn.execute_batch("INSERT INTO product_search (product_search) VALUES ('optimize')")?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_entry_passes_the_product_rules() {
        assert!(CATALOGUE.len() >= 50);
        for (category, name, price, stock, description) in CATALOGUE {
            domain::check_new(name, description, *price, *stock, category).unwrap();
        }
        let mut names: Vec<&str> = CATALOGUE.iter().map(|e| e.1).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len(), "names are unique");
    }
}
