//! Made-up catalogues of any size for benchmarks and demos (`product-service seed --count N`):
//! product `i` is always the same product, so two runs with the same count build the same
//! catalogue. Names and descriptions mix English, Chinese and both in one line, the way a
//! marketplace's listings do; categories, prices and stock vary; each product is a minute newer
//! than the one before it, so ids follow creation time.

use crate::domain::NewProduct;

/// (category, English nouns, Chinese nouns): a noun at the same index names the same thing.
const KINDS: &[(&str, &[&str], &[&str])] = &[
    (
        "electronics",
        &[
            "phone",
            "laptop",
            "headphones",
            "speaker",
            "camera",
            "watch",
            "charger",
            "keyboard",
            "mouse",
            "tablet",
        ],
        &[
            "手机",
            "电脑",
            "耳机",
            "音箱",
            "相机",
            "手表",
            "充电器",
            "键盘",
            "鼠标",
            "平板",
        ],
    ),
    (
        "home",
        &[
            "lamp", "kettle", "pillow", "blanket", "mug", "chair", "curtain", "clock", "mirror", "vase",
        ],
        &[
            "台灯", "水壶", "枕头", "毛毯", "水杯", "椅子", "窗帘", "时钟", "镜子", "花瓶",
        ],
    ),
    (
        "clothing",
        &[
            "jacket", "shirt", "sneakers", "scarf", "hat", "socks", "dress", "jeans", "gloves", "coat",
        ],
        &[
            "夹克",
            "衬衫",
            "球鞋",
            "围巾",
            "帽子",
            "袜子",
            "连衣裙",
            "牛仔裤",
            "手套",
            "外套",
        ],
    ),
    (
        "food",
        &[
            "tea",
            "coffee",
            "chocolate",
            "honey",
            "noodles",
            "rice",
            "cookies",
            "nuts",
            "jam",
            "sauce",
        ],
        &[
            "茶叶",
            "咖啡",
            "巧克力",
            "蜂蜜",
            "面条",
            "大米",
            "饼干",
            "坚果",
            "果酱",
            "酱油",
        ],
    ),
    (
        "sports",
        &[
            "ball", "racket", "bike", "tent", "backpack", "bottle", "mat", "helmet", "rope", "skates",
        ],
        &[
            "球",
            "球拍",
            "自行车",
            "帐篷",
            "背包",
            "水瓶",
            "瑜伽垫",
            "头盔",
            "跳绳",
            "滑板",
        ],
    ),
    (
        "books",
        &[
            "novel",
            "cookbook",
            "atlas",
            "notebook",
            "comic",
            "dictionary",
            "guide",
            "poems",
            "diary",
            "manual",
        ],
        &[
            "小说",
            "菜谱",
            "地图册",
            "笔记本",
            "漫画",
            "词典",
            "指南",
            "诗集",
            "日记",
            "手册",
        ],
    ),
];

const ADJECTIVES: &[(&str, &str)] = &[
    ("wireless", "无线"),
    ("ultra", "超薄"),
    ("smart", "智能"),
    ("portable", "便携"),
    ("classic", "经典"),
    ("pro", "专业"),
    ("mini", "迷你"),
    ("premium", "高端"),
    ("eco", "环保"),
    ("quiet", "静音"),
    ("waterproof", "防水"),
    ("foldable", "折叠"),
];

const BRANDS: &[&str] = &[
    "Acme", "Nova", "Zenith", "Orion", "Lumo", "Kite", "iPhone", "小米", "华为", "海尔", "联想", "美的",
    "格力",
];

/// Sentences for descriptions; `{a}` an adjective, `{n}` the product's noun, `{o}` another noun.
const SENTENCES_EN: &[&str] = &[
    "A {a} {n} for every day.",
    "Pairs well with your {o}.",
    "Built to last, light to carry.",
    "The {n} our customers ask for most.",
    "Includes a travel case and a one-year warranty.",
    "Made from recycled materials.",
    "Works with any {o}.",
    "Ships in two days.",
    "Control it from your phone.",
    "Charge your phone while you use it.",
];
const SENTENCES_ZH: &[&str] = &[
    "这款{a}{n}适合日常使用。",
    "可以和你的{o}一起用。",
    "经久耐用，轻便易携。",
    "顾客最喜欢的{n}。",
    "附赠收纳袋，保修一年。",
    "采用环保材料制成。",
    "兼容各种{o}。",
    "两天内发货。",
    "用手机就能控制。",
    "可同时为手机充电。",
];

/// splitmix64: a good spread from consecutive seeds, so product `i` needs no state.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A stream of choices for one product.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 = mix(self.0);
        usize::try_from(self.0 % n.max(1) as u64).unwrap_or(0)
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }
}

/// `text` with runs of spaces made one.
fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Product number `i` (from 0) of a generated catalogue.
pub fn product(i: u64) -> NewProduct {
    let mut d = Dice(mix(i ^ 0x5eed));
    let (category, en, zh) = d.pick(KINDS);
    let k = d.below(en.len());
    let (adj_en, adj_zh) = d.pick(ADJECTIVES);
    // Some names carry a second adjective ("wireless ultra ...").
    let (more_en, more_zh) = if d.below(3) == 0 {
        d.pick(ADJECTIVES)
    } else {
        ("", "")
    };
    let brand = d.pick(BRANDS);
    let model = 100 + d.below(900);
    let other = d.below(en.len());
    // Languages: English, Chinese, or an English name with a Chinese description.
    let (name, chinese) = match d.below(20) {
        0..=8 => (
            squash(&format!("{brand} {adj_en} {more_en} {} {model}", en[k])),
            false,
        ),
        9..=15 => (format!("{brand}{adj_zh}{more_zh}{} {model}", zh[k]), true),
        _ => (format!("{brand} {} {}{} {model}", en[k], adj_zh, zh[k]), true),
    };
    let sentences = if chinese { SENTENCES_ZH } else { SENTENCES_EN };
    let (noun, other_noun, adj) = if chinese {
        (zh[k], zh[other], adj_zh)
    } else {
        (en[k], en[other], adj_en)
    };
    let mut description = String::new();
    for _ in 0..2 + d.below(3) {
        if !description.is_empty() && !chinese {
            description.push(' ');
        }
        description.push_str(
            &d.pick(sentences)
                .replace("{a}", adj)
                .replace("{n}", noun)
                .replace("{o}", other_noun),
        );
    }
    NewProduct {
        name,
        description,
        price_cents: 100 + i64::try_from(d.below(200_000)).unwrap_or(0) * 5,
        stock: i64::try_from(d.below(1_000)).unwrap_or(0),
        category: category.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain;

    #[test]
    fn the_same_number_is_the_same_product_and_every_one_passes_the_rules() {
        assert_eq!(product(12_345), product(12_345));
        assert_ne!(product(1), product(2));
        let mut chinese = 0;
        for i in 0..5_000 {
            let p = product(i);
            domain::check_new(&p.name, &p.description, p.price_cents, p.stock, &p.category)
                .unwrap_or_else(|e| panic!("product {i} {p:?}: {e}"));
            if p.name.chars().any(|c| c > '\u{2e80}') {
                chinese += 1;
            }
        }
        assert!(
            (3_000..4_500).contains(&chinese),
            "{chinese} of 5000 have Chinese in their names"
        );
    }
}
