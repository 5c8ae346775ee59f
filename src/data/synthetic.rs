//! Procedural images for demos and tests that must run on a fresh machine without any dataset:
//! a small street scene (sky, sun, buildings with windows, trees, road with lane marks, a car).
//! Deterministic: the same size always gives the same pixels.

use image::{Rgb, RgbImage};

/// A street-like scene of `height`×`width` pixels. Shapes scale with the image, so every size
/// shows the same scene.
pub fn street_scene(height: usize, width: usize) -> RgbImage {
    let (h, w) = (height as f32, width as f32);
    RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let (u, v) = ((x as f32 + 0.5) / w, (y as f32 + 0.5) / h);
        Rgb(scene_colour(u, v).map(|c| (c.clamp(0.0, 1.0) * 255.0).round() as u8))
    })
}

/// The colour at normalised position (u right, v down), painter's order: the last hit wins.
fn scene_colour(u: f32, v: f32) -> [f32; 3] {
    let horizon = 0.58;
    // Sky gradient, then the sun.
    let mut c = [0.35 + 0.3 * v, 0.55 + 0.3 * v, 0.95 - 0.1 * v];
    if (u - 0.8).powi(2) * 4.0 + (v - 0.15).powi(2) < 0.006 {
        c = [1.0, 0.9, 0.55];
    }
    // Buildings: (left, right, top, base colour).
    let buildings = [
        (0.0, 0.18, 0.18, [0.55, 0.42, 0.36]),
        (0.2, 0.36, 0.3, [0.7, 0.7, 0.72]),
        (0.52, 0.7, 0.1, [0.4, 0.44, 0.52]),
    ];
    for (l, r, top, col) in buildings {
        if (l..r).contains(&u) && (top..horizon).contains(&v) {
            let window = ((u - l) * 60.0).fract() < 0.45 && ((v - top) * 30.0).fract() < 0.5;
            c = if window { [0.95, 0.85, 0.45] } else { col };
        }
    }
    // Trees: a trunk and a round crown.
    for cx in [0.42, 0.78, 0.93] {
        if (u - cx).abs() < 0.006 && (0.45..horizon).contains(&v) {
            c = [0.35, 0.22, 0.1];
        }
        if (u - cx).powi(2) * 4.0 + (v - 0.42).powi(2) < 0.004 {
            c = [0.15 + 0.1 * ((u * 80.0).sin() * 0.5 + 0.5), 0.45, 0.12];
        }
    }
    // Sidewalk, road and lane marks.
    if v >= horizon {
        c = if v < horizon + 0.05 {
            [0.75, 0.72, 0.68]
        } else {
            [0.3, 0.3, 0.33]
        };
        if (v - 0.82).abs() < 0.012 && (u * 8.0).fract() < 0.5 {
            c = [0.95, 0.95, 0.9];
        }
    }
    // A red car with dark windows and two wheels.
    if (0.25..0.45).contains(&u) && (0.66..0.78).contains(&v) {
        c = [0.8, 0.1, 0.12];
    }
    if (0.29..0.41).contains(&u) && (0.6..0.67).contains(&v) {
        c = if (u - 0.35).abs() < 0.005 {
            [0.8, 0.1, 0.12]
        } else {
            [0.15, 0.2, 0.3]
        };
    }
    for wx in [0.29, 0.41] {
        if (u - wx).powi(2) * 4.0 + (v - 0.78).powi(2) < 0.0012 {
            c = [0.05, 0.05, 0.05];
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scene_is_deterministic_and_has_its_parts() {
        let a = street_scene(64, 128);
        assert_eq!(a, street_scene(64, 128));
        assert_eq!(a.dimensions(), (128, 64));
        // Sky at the top left is blue-ish, the road at the bottom is grey, the car is red.
        let sky = a.get_pixel(60, 1).0;
        assert!(sky[2] > sky[0] && sky[2] > 200, "{sky:?}");
        let road = a.get_pixel(120, 62).0;
        assert!(road[0].abs_diff(road[1]) < 5 && road[0] < 100, "{road:?}");
        let car = a.get_pixel((0.3 * 128.0) as u32, (0.72 * 64.0) as u32).0;
        assert!(car[0] > 180 && car[1] < 50, "{car:?}");
    }
}
