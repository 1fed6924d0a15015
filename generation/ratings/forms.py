from django import forms

from generation.ratings.services import STARS_MAX, STARS_MIN


class RatingForm(forms.Form):
    """The stars control's post: 1–5 stars, or empty to remove the rating."""

    stars = forms.IntegerField(min_value=STARS_MIN, max_value=STARS_MAX, required=False)
