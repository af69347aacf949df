//! Labelled image grids rendered to PNG: dataset previews here, sample grids in the trainer.
//! Text uses the public-domain 8x8 bitmap font of `font8x8`.

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

const MARGIN: u32 = 4;
const GAP: u32 = 2;
const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([20, 20, 20]);

/// A grid of equally sized images with optional row and column labels.
#[derive(Debug, Clone)]
pub struct Grid {
    rows: usize,
    cols: usize,
    width: u32,
    height: u32,
    scale: u32,
    row_labels: Vec<String>,
    col_labels: Vec<String>,
    cells: Vec<Option<Vec<u8>>>,
    channels: u32,
}

impl Grid {
    /// A `rows` x `cols` grid of `width` x `height` images with `channels` channels (1 or 3),
    /// each drawn `scale` times larger (nearest neighbour).
    pub fn new(rows: usize, cols: usize, width: u32, height: u32, channels: u32, scale: u32) -> Self {
        Self {
            rows,
            cols,
            width,
            height,
            scale: scale.max(1),
            row_labels: Vec::new(),
            col_labels: Vec::new(),
            cells: vec![None; rows * cols],
            channels,
        }
    }

    /// A scale that makes cells at least `min_px` pixels wide.
    pub fn scale_for(width: u32, min_px: u32) -> u32 {
        min_px.div_ceil(width.max(1)).max(1)
    }

    /// Labels drawn left of each row.
    pub fn with_row_labels(mut self, labels: Vec<String>) -> Self {
        self.row_labels = labels;
        self
    }

    /// Labels drawn above each column (cut to the cell width).
    pub fn with_col_labels(mut self, labels: Vec<String>) -> Self {
        self.col_labels = labels;
        self
    }

    /// Places HWC u8 pixels in cell (`row`, `col`).
    pub fn set(&mut self, row: usize, col: usize, pixels: &[u8]) {
        assert_eq!(
            pixels.len(),
            (self.width * self.height * self.channels) as usize,
            "cell pixels of the grid's shape"
        );
        self.cells[row * self.cols + col] = Some(pixels.to_vec());
    }

    /// Renders the grid.
    pub fn render(&self) -> RgbImage {
        let cell_w = self.width * self.scale;
        let cell_h = self.height * self.scale;
        let label_w = self
            .row_labels
            .iter()
            .map(|l| l.chars().count() as u32 * 8 + 2 * MARGIN)
            .max()
            .unwrap_or(0);
        let header_h = if self.col_labels.is_empty() { 0 } else { 8 + 2 * MARGIN };
        let total_w = label_w + MARGIN + self.cols as u32 * (cell_w + GAP) + MARGIN;
        let total_h = header_h + MARGIN + self.rows as u32 * (cell_h + GAP) + MARGIN;
        let mut out = RgbImage::from_pixel(total_w, total_h, BACKGROUND);
        let x0 = label_w + MARGIN;
        let y0 = header_h + MARGIN;
        for (c, label) in self.col_labels.iter().enumerate() {
            let max_chars = (cell_w / 8) as usize;
            let text: String = label.chars().take(max_chars).collect();
            let x = x0 + c as u32 * (cell_w + GAP) + (cell_w - text.chars().count() as u32 * 8) / 2;
            draw_text(&mut out, x, MARGIN, &text);
        }
        for (r, label) in self.row_labels.iter().enumerate() {
            let y = y0 + r as u32 * (cell_h + GAP) + cell_h.saturating_sub(8) / 2;
            draw_text(&mut out, MARGIN, y, label);
        }
        for (i, cell) in self.cells.iter().enumerate() {
            let Some(pixels) = cell else { continue };
            let (r, c) = ((i / self.cols) as u32, (i % self.cols) as u32);
            let (cx, cy) = (x0 + c * (cell_w + GAP), y0 + r * (cell_h + GAP));
            for y in 0..cell_h {
                for x in 0..cell_w {
                    let src = (((y / self.scale) * self.width + x / self.scale) * self.channels) as usize;
                    let rgb = if self.channels == 1 {
                        [pixels[src]; 3]
                    } else {
                        [pixels[src], pixels[src + 1], pixels[src + 2]]
                    };
                    out.put_pixel(cx + x, cy + y, Rgb(rgb));
                }
            }
        }
        out
    }

    /// Renders the grid as PNG bytes.
    pub fn to_png(&self) -> Vec<u8> {
        let image = self.render();
        crate::imaging::encode_png(image.as_raw(), image.width(), image.height(), 3)
            .expect("PNG encoding of an in-memory image")
    }
}

/// Draws `text` with its top-left corner at (x, y), clipped to the image.
fn draw_text(image: &mut RgbImage, x: u32, y: u32, text: &str) {
    for (i, ch) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..8 {
                if bits >> gx & 1 == 1 {
                    let (px, py) = (x + i as u32 * 8 + gx, y + gy as u32);
                    if px < image.width() && py < image.height() {
                        image.put_pixel(px, py, INK);
                    }
                }
            }
        }
    }
}
