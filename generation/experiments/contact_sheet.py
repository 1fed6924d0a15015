"""A sweep's contact sheet: the cells' thumbnails (a video's is its poster's) in their grid, with the axis values
along the top and the left. Pillow only, so the web process makes it on demand."""

from io import BytesIO

from PIL import Image, ImageDraw, ImageFont

from generation.thumbnails import THUMB_MAX_SIDE

GAP = 8
MARGIN = 12
LABEL_SIZE = 18
BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
MISSING = (226, 228, 233)  # a cell that failed or was cancelled: an empty tile, so the grid keeps its shape


def contact_sheet_png(
    *, tiles: list[list[Image.Image | None]], x_labels: list[str], y_labels: list[str], x_title: str, y_title: str
) -> bytes:
    """`tiles[y][x]` (None: no image) laid out under `x_labels` and beside `y_labels`; the PNG's bytes."""
    font = ImageFont.load_default(size=LABEL_SIZE)
    images = [tile for row in tiles for tile in row if tile is not None]
    cell_w = max((im.width for im in images), default=THUMB_MAX_SIDE)
    cell_h = max((im.height for im in images), default=THUMB_MAX_SIDE)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max((probe.textlength(text, font=font) for text in [*y_labels, y_title]), default=0)
    left = MARGIN + int(label_w) + GAP if y_labels else MARGIN
    top = MARGIN + 2 * (LABEL_SIZE + GAP)
    columns, rows = len(x_labels), len(tiles)
    width = left + columns * (cell_w + GAP) - GAP + MARGIN
    height = top + rows * (cell_h + GAP) - GAP + MARGIN
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    # The X title centred over the columns; the Y title over the row labels, on the line of the column labels.
    draw.text((left + (width - MARGIN - left) / 2, MARGIN), x_title, fill=INK, font=font, anchor="mt")
    if y_labels:
        draw.text((MARGIN, MARGIN + LABEL_SIZE + GAP), y_title, fill=INK, font=font, anchor="lt")
    for x, text in enumerate(x_labels):
        centre = left + x * (cell_w + GAP) + cell_w / 2
        draw.text((centre, MARGIN + LABEL_SIZE + GAP), text, fill=INK, font=font, anchor="mt")
    for y, row in enumerate(tiles):
        y0 = top + y * (cell_h + GAP)
        if y_labels:
            draw.text((MARGIN, y0 + cell_h / 2), y_labels[y], fill=INK, font=font, anchor="lm")
        for x, tile in enumerate(row):
            x0 = left + x * (cell_w + GAP)
            if tile is None:
                draw.rectangle((x0, y0, x0 + cell_w - 1, y0 + cell_h - 1), fill=MISSING)
                continue
            tile = tile.convert("RGB")
            sheet.paste(tile, (x0 + (cell_w - tile.width) // 2, y0 + (cell_h - tile.height) // 2))
    out = BytesIO()
    sheet.save(out, format="PNG", optimize=True)
    return out.getvalue()
