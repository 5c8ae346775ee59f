//! The street scene renderer: procedural images and videos for demos and tests that must run on a
//! fresh machine without any dataset.
//!
//! - [`street_scene`]: a still street scene, the first frame of the seed-0 video.
//! - [`StreetVideo`]: a labelled street clip seen by a static camera. A fixed background of stuff
//!   (sky, buildings with windows, trees, a street lamp, sidewalks, a road with a dashed lane
//!   mark, a grass verge, and one unlabelled street bin) and eight things (four cars, four
//!   persons) that translate at known constant velocities, occlude one another by depth and enter
//!   or leave the frame. Each frame comes with per-pixel labels and its exact optical flow;
//!   [`super::dataset`] writes the clip as a panoptic dataset.
//!
//! Both are pure functions of their arguments (size, seed, frame index): the same arguments give
//! the same pixels on every run.

use image::{Rgb, RgbImage};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A still street scene of `height`×`width` pixels: the first frame of the seed-0
/// [`StreetVideo`], the FFN demo's fallback image.
pub fn street_scene(height: usize, width: usize) -> RgbImage {
    StreetVideo::new(height, width, 0).render(0).rgb
}

// ---------------------------------------------------------------------------------------------
// The street video.

/// Bottom of the buildings and top of the far sidewalk, as a fraction of the height.
const HORIZON: f64 = 0.52;
/// Top of the road.
const ROAD_TOP: f64 = 0.60;
/// Centre of the dashed lane mark between the far and the near lane.
const LANE_MARK: f64 = 0.75;
/// Top of the near sidewalk.
const NEAR_SIDEWALK_TOP: f64 = 0.90;
/// Top of the grass verge at the bottom of the frame.
const TERRAIN_TOP: f64 = 0.95;

/// A class of the street video, independent of any dataset's category ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SceneClass {
    /// A vertical gradient above the buildings.
    Sky,
    /// Facades with a grid of windows, some lit.
    Building,
    /// Trees: trunks and crowns.
    Vegetation,
    /// A street lamp.
    Pole,
    /// The far and the near sidewalk, paved in slabs.
    Sidewalk,
    /// Asphalt with a dashed lane mark.
    Road,
    /// The grass verge at the bottom.
    Terrain,
    /// A thing: side view of a car.
    Car,
    /// A thing: a standing person.
    Person,
}

impl SceneClass {
    /// The stuff classes: the regions of the static background.
    pub const STUFF: [SceneClass; 7] = [
        SceneClass::Sky,
        SceneClass::Building,
        SceneClass::Vegetation,
        SceneClass::Pole,
        SceneClass::Sidewalk,
        SceneClass::Road,
        SceneClass::Terrain,
    ];

    /// Whether the class has countable instances (cars and persons).
    pub fn is_thing(self) -> bool {
        matches!(self, SceneClass::Car | SceneClass::Person)
    }

    /// The lower-case English name, the prefix of instance names (`car_0`).
    pub fn name(self) -> &'static str {
        match self {
            SceneClass::Sky => "sky",
            SceneClass::Building => "building",
            SceneClass::Vegetation => "vegetation",
            SceneClass::Pole => "pole",
            SceneClass::Sidewalk => "sidewalk",
            SceneClass::Road => "road",
            SceneClass::Terrain => "terrain",
            SceneClass::Car => "car",
            SceneClass::Person => "person",
        }
    }
}

/// What one pixel of a frame shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    /// Unlabelled: a street bin, as Cityscapes leaves its "static" objects unlabelled.
    Void,
    /// A region of the static background.
    Stuff(SceneClass),
    /// A car or a person, by its index in [`StreetVideo::things`].
    Thing(usize),
}

/// How a thing is painted.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Look {
    /// Car body, or shirt.
    main: [u8; 3],
    /// Trousers.
    second: [u8; 3],
    skin: [u8; 3],
}

/// A car or a person: a sprite that translates at a constant velocity, so that its pixels at
/// frame `t + 1` are its pixels at frame `t` shifted by [`Thing::velocity`].
#[derive(Clone, Debug, PartialEq)]
pub struct Thing {
    /// [`SceneClass::Car`] or [`SceneClass::Person`].
    pub class: SceneClass,
    /// Index among the things of its class: the `k` of `car_k`.
    pub k: usize,
    /// Top-left corner `[x, y]` of the sprite box at frame 0, in pixels; may lie outside the frame.
    pub origin: [i64; 2],
    /// Sprite box `[height, width]` in pixels.
    pub size: [usize; 2],
    /// Constant velocity `[u, v]` in pixels per frame (u to the right, v downwards).
    pub velocity: [i64; 2],
    look: Look,
    /// Seeds the sprite's texture, which moves with it.
    texture_key: u64,
}

impl Thing {
    /// `"{class}_{k}"`, e.g. `car_0`, numbered in scene order (a written dataset numbers by first
    /// appearance instead, see `crate::data::synth::dataset::SynthInstance::name`).
    pub fn name(&self) -> String {
        format!("{}_{}", self.class.name(), self.k)
    }

    /// Top-left corner `[x, y]` of the sprite box at frame `t`.
    pub fn top_left(&self, t: usize) -> [i64; 2] {
        let t = t as i64;
        [
            self.origin[0] + self.velocity[0] * t,
            self.origin[1] + self.velocity[1] * t,
        ]
    }

    /// One past the bottom row of the sprite at frame `t`; lower on screen means nearer.
    fn bottom(&self, t: usize) -> i64 {
        self.top_left(t)[1] + self.size[0] as i64
    }

    /// The colour at sprite pixel `(lx, ly)`, `None` where the sprite is transparent.
    fn sprite(&self, lx: i64, ly: i64) -> Option<[u8; 3]> {
        let centre = (lx as f64 + 0.5, ly as f64 + 0.5);
        let colour = match self.class {
            SceneClass::Car => self.car_pixel(centre),
            _ => self.person_pixel(centre),
        }?;
        Some(shade(colour, grain(self.texture_key, lx, ly, 2, 4)))
    }

    /// A side view of a car facing its direction of motion: body, cabin with windows, wheels,
    /// head- and taillights.
    fn car_pixel(&self, (x, y): (f64, f64)) -> Option<[u8; 3]> {
        let (h, w) = (self.size[0] as f64, self.size[1] as f64);
        let (u, v) = (x / w, y / h);
        let front = if self.velocity[0] >= 0 { u } else { 1.0 - u };
        let r = 0.2 * h;
        for cx in [0.2 * w, 0.8 * w] {
            let d2 = (x - cx).powi(2) + (y - (h - r)).powi(2);
            if d2 < r * r {
                return Some(if d2 < 0.2 * r * r { HUB } else { TYRE });
            }
        }
        if (0.4..0.85).contains(&v) {
            return Some(match front {
                f if f > 0.95 && v < 0.55 => HEADLIGHT,
                f if f < 0.04 && v < 0.55 => TAILLIGHT,
                _ => shade(self.look.main, -(v * 40.0) as i32),
            });
        }
        let rise = (0.4 - v) / 0.34; // 0 at the waist, 1 at the roof
        let (rear, nose) = (0.12 + 0.14 * rise, 0.78 - 0.12 * rise);
        if !(0.06..0.4).contains(&v) || !(rear..nose).contains(&front) {
            return None;
        }
        let glass = v > 0.11 && front > rear + 0.04 && front < nose - 0.04;
        let pillar = (front - 0.48).abs() < 0.025;
        Some(if glass && !pillar {
            GLASS
        } else {
            self.look.main
        })
    }

    /// A standing person: head, shirt, two legs (the gap between them shows the background).
    fn person_pixel(&self, (x, y): (f64, f64)) -> Option<[u8; 3]> {
        let (h, w) = (self.size[0] as f64, self.size[1] as f64);
        let (u, v) = (x / w, y / h);
        let r = 0.085 * h;
        if (x - 0.5 * w).powi(2) + (y - 0.09 * h).powi(2) < r * r {
            return Some(self.look.skin);
        }
        if (0.17..0.56).contains(&v) && (0.1..0.9).contains(&u) {
            return Some(self.look.main);
        }
        let leg = (0.15..0.46).contains(&u) || (0.54..0.85).contains(&u);
        if (0.56..1.0).contains(&v) && leg {
            return Some(if v > 0.95 { SHOES } else { self.look.second });
        }
        None
    }
}

const HUB: [u8; 3] = [150, 150, 155];
const TYRE: [u8; 3] = [28, 28, 30];
const HEADLIGHT: [u8; 3] = [250, 240, 200];
const TAILLIGHT: [u8; 3] = [190, 25, 25];
const GLASS: [u8; 3] = [45, 60, 80];
const SHOES: [u8; 3] = [30, 25, 25];
const CAR_PAINTS: [[u8; 3]; 6] = [
    [200, 35, 40],
    [35, 75, 165],
    [225, 225, 220],
    [45, 45, 50],
    [205, 170, 45],
    [125, 130, 135],
];
const SHIRTS: [[u8; 3]; 5] = [
    [200, 60, 60],
    [60, 120, 200],
    [240, 200, 60],
    [80, 160, 90],
    [150, 80, 160],
];
const TROUSERS: [[u8; 3]; 3] = [[40, 45, 70], [75, 65, 55], [35, 35, 40]];
const SKINS: [[u8; 3]; 3] = [[230, 190, 160], [185, 135, 105], [125, 90, 65]];

/// Where a thing starts and how fast it goes, in fractions of the frame.
struct ThingSpec {
    class: SceneClass,
    /// Left edge at frame 0, in widths.
    left: f64,
    /// Bottom edge, in heights.
    bottom: f64,
    /// Sprite height, in heights.
    height: f64,
    /// Horizontal speed, in widths per frame (negative: to the left).
    speed: f64,
}

/// The cast: two cars in the far lane going left (one leaves, one enters from the right), two in
/// the near lane going right (one enters from the left, one leaves to the right), two persons
/// crossing each other on the far sidewalk and two on the near sidewalk, in front of the near
/// lane. The seed jitters starts (±1.5 % of the width) and speeds (±15 %).
const CAST: [ThingSpec; 8] = [
    //             class, left (widths), bottom, height (heights), speed (widths/frame)
    ThingSpec::new(SceneClass::Car, 0.06, 0.72, 0.12, -0.012),
    ThingSpec::new(SceneClass::Car, 1.02, 0.72, 0.12, -0.030),
    ThingSpec::new(SceneClass::Car, -0.30, 0.87, 0.20, 0.025),
    ThingSpec::new(SceneClass::Car, 0.55, 0.87, 0.20, 0.040),
    ThingSpec::new(SceneClass::Person, 0.30, 0.58, 0.16, 0.004),
    ThingSpec::new(SceneClass::Person, 0.36, 0.595, 0.16, -0.005),
    ThingSpec::new(SceneClass::Person, 0.62, 0.97, 0.28, -0.006),
    ThingSpec::new(SceneClass::Person, -0.06, 0.975, 0.28, 0.008),
];

impl ThingSpec {
    const fn new(class: SceneClass, left: f64, bottom: f64, height: f64, speed: f64) -> Self {
        ThingSpec {
            class,
            left,
            bottom,
            height,
            speed,
        }
    }

    /// The thing in pixels for a `height`×`width` frame, painted `main` (body or shirt),
    /// jittered by `rng`.
    fn place(
        &self,
        k: usize,
        [height, width]: [f64; 2],
        main: [u8; 3],
        rng: &mut ChaCha8Rng,
    ) -> Thing {
        let aspect = if self.class == SceneClass::Car {
            2.8
        } else {
            0.3
        };
        let h = (self.height * height).round().max(1.0);
        let w = (h * aspect).round().max(1.0);
        let left = ((self.left + rng.random_range(-0.015..0.015)) * width).round();
        let speed = (self.speed * rng.random_range(0.85..1.15) * width).round() as i64;
        let speed = if speed == 0 {
            self.speed.signum() as i64
        } else {
            speed
        };
        let look = Look {
            main,
            second: TROUSERS[rng.random_range(0..TROUSERS.len())],
            skin: SKINS[rng.random_range(0..SKINS.len())],
        };
        Thing {
            class: self.class,
            k,
            origin: [
                left as i64,
                (self.bottom * height).round() as i64 - h as i64,
            ],
            size: [h as usize, w as usize],
            velocity: [speed, 0],
            look,
            texture_key: rng.random(),
        }
    }
}

/// An axis-aligned ellipse in pixels.
#[derive(Clone, Copy, Debug)]
struct Ellipse {
    cx: f64,
    cy: f64,
    rx: f64,
    ry: f64,
}

impl Ellipse {
    fn contains(&self, x: i64, y: i64) -> bool {
        let dx = (x as f64 + 0.5 - self.cx) / self.rx;
        let dy = (y as f64 + 0.5 - self.cy) / self.ry;
        dx * dx + dy * dy < 1.0
    }
}

/// A building: a facade with a grid of windows, some lit.
#[derive(Clone, Debug)]
struct Building {
    /// Columns `x0..x1`.
    cols: [i64; 2],
    top: i64,
    colour: [u8; 3],
    key: u64,
}

/// A tree: a trunk and a crown of three overlapping ellipses.
#[derive(Clone, Debug)]
struct Tree {
    /// Columns `x0..x1` of the trunk.
    trunk: [i64; 2],
    crown: [Ellipse; 3],
}

/// The static background, in pixels: row boundaries of the bands and the placed objects.
#[derive(Clone, Debug)]
struct Street {
    seed: u64,
    horizon: i64,
    road: i64,
    /// Rows `y0..y1` of the lane mark.
    lane: [i64; 2],
    near: i64,
    terrain: i64,
    /// Row on which trees, the pole and the bin stand.
    foot: i64,
    /// Period of the lane dashes.
    dash: i64,
    /// Side of the paving slabs.
    slab: i64,
    /// Cell `[x, y]` of the window grid.
    window: [i64; 2],
    /// Cell of the texture grain.
    cell: i64,
    buildings: Vec<Building>,
    trees: Vec<Tree>,
    /// Columns `x0..x1` of the pole and its top row; the arm reaches `arm` columns to the right.
    pole: [i64; 3],
    arm: i64,
    /// `[x0, x1, y0]` of the street bin (void), standing on `foot`.
    bin: [i64; 3],
}

const SKY_TOP: [f64; 3] = [105.0, 155.0, 215.0];
const SKY_LOW: [f64; 3] = [190.0, 212.0, 235.0];
const FACADES: [[u8; 3]; 5] = [
    [150, 130, 115],
    [175, 170, 160],
    [120, 115, 125],
    [160, 120, 100],
    [190, 180, 150],
];
const WINDOW_LIT: [u8; 3] = [235, 215, 140];
const WINDOW_DARK: [u8; 3] = [60, 75, 95];
const SIDEWALK: [u8; 3] = [172, 166, 158];
const ASPHALT: [u8; 3] = [88, 88, 93];
const LANE_PAINT: [u8; 3] = [235, 235, 225];
const GRASS: [u8; 3] = [90, 140, 60];
const LEAVES: [u8; 3] = [60, 112, 45];
const BARK: [u8; 3] = [95, 70, 45];
const POLE_GREY: [u8; 3] = [110, 110, 118];
const BIN_GREEN: [u8; 3] = [50, 72, 62];

impl Street {
    /// Lays out the background of a `height`×`width` frame from `rng`.
    fn new(height: usize, width: usize, seed: u64, rng: &mut ChaCha8Rng) -> Self {
        let (h, w) = (height as f64, width as f64);
        let row = |f: f64| (f * h).round() as i64;
        let col = |f: f64| (f * w).round() as i64;
        let px = |n: i64| n.max(1);
        let (horizon, road) = (row(HORIZON), row(ROAD_TOP));
        let lane_half = px(row(0.008));
        let foot = horizon + (road - horizon) * 2 / 3;
        let pole_x = col(0.66 + rng.random_range(-0.03..0.03));
        let pole_w = px(col(0.005));
        let bin_x = col(0.40 + rng.random_range(-0.03..0.03));
        Street {
            seed,
            horizon,
            road,
            lane: [row(LANE_MARK) - lane_half, row(LANE_MARK) + lane_half],
            near: row(NEAR_SIDEWALK_TOP),
            terrain: row(TERRAIN_TOP),
            foot,
            dash: px(col(1.0 / 16.0)),
            slab: px(col(0.04)).max(3),
            window: [px(col(0.035)).max(3), px(row(0.06)).max(3)],
            cell: px(height as i64 / 128),
            buildings: Self::random_buildings(h, w, rng),
            trees: Self::random_trees(h, w, rng),
            pole: [pole_x, pole_x + pole_w, row(0.2)],
            arm: px(col(0.03)),
            bin: [bin_x, bin_x + px(col(0.02)), foot - px(row(0.06))],
        }
    }

    /// Buildings side by side across the frame, with occasional gaps showing the sky.
    fn random_buildings(h: f64, w: f64, rng: &mut ChaCha8Rng) -> Vec<Building> {
        let mut buildings = Vec::new();
        let mut left = -0.02;
        while left < 1.0 {
            let right = left + rng.random_range(0.12..0.24);
            buildings.push(Building {
                cols: [(left * w).round() as i64, (right * w).round() as i64],
                top: (rng.random_range(0.08..0.32) * h).round() as i64,
                colour: FACADES[rng.random_range(0..FACADES.len())],
                key: rng.random(),
            });
            let gap = if rng.random_bool(0.25) {
                rng.random_range(0.03..0.06)
            } else {
                0.0
            };
            left = right + gap;
        }
        buildings
    }

    /// Three trees spread along the far sidewalk.
    fn random_trees(h: f64, w: f64, rng: &mut ChaCha8Rng) -> Vec<Tree> {
        [0.15, 0.5, 0.85]
            .iter()
            .map(|&x| {
                let cx = (x + rng.random_range(-0.05..0.05)) * w;
                let cy = rng.random_range(0.28..0.34) * h;
                let half = (0.005 * w).round().max(1.0) as i64;
                let lobe = |side: f64, rng: &mut ChaCha8Rng| Ellipse {
                    cx: cx + side * rng.random_range(0.025..0.035) * w,
                    cy: cy + rng.random_range(0.02..0.05) * h,
                    rx: rng.random_range(0.03..0.04) * w,
                    ry: rng.random_range(0.07..0.09) * h,
                };
                let main = Ellipse {
                    cx,
                    cy,
                    rx: 0.05 * w,
                    ry: 0.11 * h,
                };
                Tree {
                    trunk: [cx as i64 - half, cx as i64 + half],
                    crown: [main, lobe(-1.0, rng), lobe(1.0, rng)],
                }
            })
            .collect()
    }

    /// The label and colour of background pixel `(x, y)`, front-most layer first.
    fn pixel(&self, x: i64, y: i64) -> (Label, [u8; 3]) {
        self.bin(x, y)
            .or_else(|| self.pole(x, y))
            .or_else(|| self.tree(x, y))
            .or_else(|| self.ground(x, y))
            .or_else(|| self.building(x, y))
            .unwrap_or_else(|| (Label::Stuff(SceneClass::Sky), self.sky(y)))
    }

    fn bin(&self, x: i64, y: i64) -> Option<(Label, [u8; 3])> {
        let [x0, x1, y0] = self.bin;
        ((x0..x1).contains(&x) && (y0..self.foot).contains(&y)).then_some((Label::Void, BIN_GREEN))
    }

    fn pole(&self, x: i64, y: i64) -> Option<(Label, [u8; 3])> {
        let [x0, x1, top] = self.pole;
        let thick = x1 - x0;
        let mast = (x0..x1).contains(&x) && (top..self.foot).contains(&y);
        let arm = (x0..x0 + self.arm).contains(&x) && (top..top + thick).contains(&y);
        let lamp = (x0 + self.arm - 2 * thick..x0 + self.arm).contains(&x)
            && (top + thick..top + 2 * thick).contains(&y);
        let label = Label::Stuff(SceneClass::Pole);
        (mast || arm)
            .then_some((label, POLE_GREY))
            .or(lamp.then_some((label, WINDOW_LIT)))
    }

    fn tree(&self, x: i64, y: i64) -> Option<(Label, [u8; 3])> {
        let label = Label::Stuff(SceneClass::Vegetation);
        self.trees.iter().find_map(|tree| {
            if tree.crown.iter().any(|e| e.contains(x, y)) {
                let leaf = shade(LEAVES, grain(self.seed ^ 1, x, y, self.cell, 12));
                return Some((label, leaf));
            }
            let trunk = (tree.trunk[0]..tree.trunk[1]).contains(&x)
                && (tree.crown[0].cy as i64..self.foot).contains(&y);
            trunk.then_some((label, BARK))
        })
    }

    /// Sidewalks, road with a dashed lane mark, and the grass verge, below the horizon.
    fn ground(&self, x: i64, y: i64) -> Option<(Label, [u8; 3])> {
        if y < self.horizon {
            return None;
        }
        let paving = || {
            let joint =
                x.rem_euclid(self.slab) == 0 || (y - self.horizon).rem_euclid(self.slab) == 0;
            let base = if joint {
                shade(SIDEWALK, -30)
            } else {
                SIDEWALK
            };
            (
                Label::Stuff(SceneClass::Sidewalk),
                shade(base, grain(self.seed ^ 2, x, y, self.cell, 4)),
            )
        };
        Some(if y >= self.terrain {
            let grass = shade(GRASS, grain(self.seed ^ 3, x, y, self.cell, 10));
            (Label::Stuff(SceneClass::Terrain), grass)
        } else if y >= self.near || y < self.road {
            paving()
        } else {
            let dash = (self.lane[0]..self.lane[1]).contains(&y) && (x / self.dash) % 2 == 0;
            let asphalt = shade(ASPHALT, grain(self.seed ^ 4, x, y, self.cell, 5));
            (
                Label::Stuff(SceneClass::Road),
                if dash { LANE_PAINT } else { asphalt },
            )
        })
    }

    fn building(&self, x: i64, y: i64) -> Option<(Label, [u8; 3])> {
        let b = self
            .buildings
            .iter()
            .find(|b| (b.cols[0]..b.cols[1]).contains(&x) && y >= b.top)?;
        let [cw, ch] = self.window;
        let (lx, ly) = (x - b.cols[0], y - b.top);
        let (col, row) = (lx / cw, ly / ch);
        let in_window = (cw / 4..cw - cw / 4).contains(&(lx % cw))
            && (ch / 3..ch).contains(&(ly % ch))
            && b.top + (row + 1) * ch < self.horizon;
        let colour = if !in_window {
            shade(b.colour, grain(b.key, x, y, self.cell, 5))
        } else if hash(b.key, col, row) % 4 == 0 {
            WINDOW_LIT
        } else {
            WINDOW_DARK
        };
        Some((Label::Stuff(SceneClass::Building), colour))
    }

    /// A vertical gradient, deeper blue at the top.
    fn sky(&self, y: i64) -> [u8; 3] {
        let f = (y as f64 / self.horizon.max(1) as f64).min(1.0);
        std::array::from_fn(|c| (SKY_TOP[c] + (SKY_LOW[c] - SKY_TOP[c]) * f).round() as u8)
    }
}

/// One rendered frame of a [`StreetVideo`].
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// The picture.
    pub rgb: RgbImage,
    /// Per-pixel labels, row-major `[H, W]`.
    pub labels: Vec<Label>,
    /// Per-pixel optical flow `[u, v]` in pixels per frame, row-major `[H, W]`: the velocity of
    /// the thing visible at the pixel (its displacement to the next frame), 0 on the background.
    pub flow: Vec<[f32; 2]>,
}

/// A labelled street clip seen by a static camera: the background never moves; eight things
/// (four cars, four persons) translate at constant velocities, nearer ones (lower on screen)
/// drawn over farther ones. A pure function of (size, seed, frame index).
#[derive(Clone, Debug)]
pub struct StreetVideo {
    height: usize,
    width: usize,
    background: Vec<(Label, [u8; 3])>,
    things: Vec<Thing>,
}

impl StreetVideo {
    /// The clip at `height`×`width` pixels for `seed`. The seed varies the buildings, trees,
    /// colours, and the things' starts and speeds; the cast and its events stay the same.
    pub fn new(height: usize, width: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let street = Street::new(height, width, seed, &mut rng);
        let background = (0..height as i64)
            .flat_map(|y| (0..width as i64).map(move |x| (x, y)))
            .map(|(x, y)| street.pixel(x, y))
            .collect();
        let (mut paints, mut shirts) = (CAR_PAINTS, SHIRTS);
        paints.shuffle(&mut rng);
        shirts.shuffle(&mut rng);
        let mut counts = [0usize; 2];
        let things = CAST
            .iter()
            .map(|spec| {
                let is_person = spec.class == SceneClass::Person;
                let k = counts[usize::from(is_person)];
                counts[usize::from(is_person)] += 1;
                let palette: &[[u8; 3]] = if is_person { &shirts } else { &paints };
                let size = [height as f64, width as f64];
                spec.place(k, size, palette[k % palette.len()], &mut rng)
            })
            .collect();
        StreetVideo {
            height,
            width,
            background,
            things,
        }
    }

    /// `[height, width]` in pixels.
    pub fn size(&self) -> [usize; 2] {
        [self.height, self.width]
    }

    /// The cars and persons; [`Label::Thing`] indexes this list.
    pub fn things(&self) -> &[Thing] {
        &self.things
    }

    /// Frame `t` (any `t`: the clip has no end).
    pub fn render(&self, t: usize) -> Frame {
        let (mut labels, mut colours): (Vec<Label>, Vec<[u8; 3]>) =
            self.background.iter().copied().unzip();
        let mut flow = vec![[0.0f32; 2]; labels.len()];
        for i in self.depth_order(t) {
            let velocity = self.things[i].velocity.map(|v| v as f32);
            self.for_each_sprite_pixel(i, t, |p, colour| {
                labels[p] = Label::Thing(i);
                colours[p] = colour;
                flow[p] = velocity;
            });
        }
        let rgb = RgbImage::from_fn(self.width as u32, self.height as u32, |x, y| {
            Rgb(colours[y as usize * self.width + x as usize])
        });
        Frame { rgb, labels, flow }
    }

    /// The whole sprite of thing `i` at frame `t`, occluded or not, clipped to the frame:
    /// row-major `[H, W]`.
    pub fn silhouette(&self, i: usize, t: usize) -> Vec<bool> {
        let mut mask = vec![false; self.height * self.width];
        self.for_each_sprite_pixel(i, t, |p, _| mask[p] = true);
        mask
    }

    /// Thing indices from far to near: by bottom row, then by index.
    fn depth_order(&self, t: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.things.len()).collect();
        order.sort_by_key(|&i| (self.things[i].bottom(t), i));
        order
    }

    /// Calls `f(pixel index, colour)` for every in-frame pixel of thing `i`'s sprite at frame `t`.
    fn for_each_sprite_pixel(&self, i: usize, t: usize, mut f: impl FnMut(usize, [u8; 3])) {
        let thing = &self.things[i];
        let [x0, y0] = thing.top_left(t);
        let [h, w] = thing.size.map(|s| s as i64);
        let (rows, cols) = (0..self.height as i64, 0..self.width as i64);
        for ly in (0..h).filter(|ly| rows.contains(&(y0 + ly))) {
            for lx in (0..w).filter(|lx| cols.contains(&(x0 + lx))) {
                if let Some(colour) = thing.sprite(lx, ly) {
                    f((y0 + ly) as usize * self.width + (x0 + lx) as usize, colour);
                }
            }
        }
    }
}

/// A 64-bit hash of a key and two integers (splitmix64 rounds): deterministic on every platform.
fn hash(key: u64, a: i64, b: i64) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    mix(mix(mix(key) ^ a as u64) ^ b as u64)
}

/// Texture grain: `-amp`, 0 or `+amp`, constant over `cell`×`cell` blocks (coarse and few-valued,
/// so that PNGs stay small).
fn grain(key: u64, x: i64, y: i64, cell: i64, amp: i32) -> i32 {
    let h = hash(key, x.div_euclid(cell), y.div_euclid(cell));
    (h % 3) as i32 * amp - amp
}

/// `colour` brightened (or darkened) by `delta` on every channel, saturating.
fn shade(colour: [u8; 3], delta: i32) -> [u8; 3] {
    colour.map(|c| (c as i32 + delta).clamp(0, 255) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn still_scene_is_the_first_video_frame() {
        let a = street_scene(64, 128);
        assert_eq!(a, street_scene(64, 128));
        assert_eq!(a.dimensions(), (128, 64));
        let frame = StreetVideo::new(64, 128, 0).render(0);
        assert_eq!(a, frame.rgb);
        // The top row is sky, and blue-ish.
        assert!(frame.labels[..128]
            .iter()
            .all(|l| *l == Label::Stuff(SceneClass::Sky)));
        let sky = a.get_pixel(60, 0).0;
        assert!(sky[2] > sky[0], "{sky:?}");
    }
}
