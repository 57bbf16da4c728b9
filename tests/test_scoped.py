"""jaxhlm.scoped's process-wide settings: the garbage collector paused (jaxhlm.collector)
and NumPy's huge pages off (jaxhlm.pages), each restored when the last block ends, nested
and across threads; the collector never unfreezes what a user froze."""

import gc
import threading

import numpy as np
import pytest

from jaxhlm import collector, pages
from jaxhlm.scoped import Scoped


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


def test_a_scoped_setting_changes_once_and_restores_when_the_last_block_ends_across_threads():
    log = []
    setting = Scoped(lambda: log.append("change") or "found", lambda v: log.append(("restore", v)))
    inside, leave = threading.Event(), threading.Event()

    def other():
        with setting():
            inside.set()
            leave.wait(10)

    t = threading.Thread(target=other)
    t.start()
    inside.wait(10)
    with setting():
        with setting():
            assert log == ["change"]
    assert log == ["change"]          # the other thread's block still runs
    leave.set()
    t.join(10)
    assert log == ["change", ("restore", "found")]
    with pytest.raises(ValueError):
        with setting():
            raise ValueError
    assert log[-1] == ("restore", "found")


def test_numpy_huge_pages_are_off_inside_and_the_users_setting_comes_back():
    switch = pages._switch()
    if switch is None:
        pytest.skip("this NumPy has no huge-page switch")
    for users in (True, False):
        switch(users)
        with pages.small_pages():
            assert switch(False) is False          # off inside
        assert switch(users) is users             # the user's setting back
    switch(True)


def test_a_model_and_a_batch_leave_numpy_huge_pages_as_the_user_set_them(sleepstudy):
    import jaxhlm

    switch = pages._switch()
    if switch is None:
        pytest.skip("this NumPy has no huge-page switch")
    assert switch(True) in (True, False)
    model = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", sleepstudy)   # (built on small pages)
    assert switch(True) is True
    res = model.fit()
    assert switch(True) is True
    sims = res.simulate(3)
    assert switch(True) is True
    model.fit_many(sims)
    assert switch(True) is True
    assert np.isfinite(sims).all()
