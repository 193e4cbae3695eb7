import pytest

from gradkit_support.models import Bigram


@pytest.fixture
def bigram():
    return Bigram
