"""jaxhlm.collector: the garbage collector paused and restored, nested, never unfreezing
what a user froze."""

import gc

from jaxhlm import collector


def test_the_collector_resumes_after_the_last_pause_and_respects_the_users_setting():
    assert gc.isenabled()
    with collector.paused():
        assert not gc.isenabled()
        with collector.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with collector.paused():
            pass
        assert not gc.isenabled()   # the user's off stays off
    finally:
        gc.enable()


def test_a_pause_ages_young_objects_but_keeps_what_a_user_froze():
    young = [[] for _ in range(100)]
    with collector.paused():
        pass
    assert gc.get_count()[0] < 100 and young
    gc.freeze()
    frozen = gc.get_freeze_count()
    try:
        with collector.paused():
            pass
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
